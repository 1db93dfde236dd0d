"""Evaluation: batched greedy generation over test sets, metrics with bootstrap CIs, the cross-corpus transfer
matrix, the paper's tables and report, figures, and folder inference for users.

    config.EvalConfig       the `eval` section
    testsets                which utterances a run is scored on (in-corpus fold/split, cross-corpus 4-class sets)
    generate                batched greedy generation, resumable jsonl predictions
    metrics                 WA, UA, macro-F1, per-class recall, confusion, unparseable rate, bootstrap CIs
    crosscorpus             transfer matrix (rows train corpus, columns test corpus; EmoBox Table 5 layout)
    matrix                  run the profile's experiment matrix and collect every score from prediction files
    tables                  main / ablation / cross-corpus / cost tables (CSV, Markdown, LaTeX) and the report
    figures                 one figure per table, training curves, prior heatmaps
    infer                   label a folder of audio files
"""
