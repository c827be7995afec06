"""The data layer: prepared clips on disk and their way into training.

``records`` (the ArrayRecord clip format, reading splits), ``input_pipeline`` (grain: entries,
hard negatives, augmentation), ``clip_package`` (the one-file clip package that
``train_device`` trains from on an accelerator without grain).
"""
