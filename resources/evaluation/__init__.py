"""Does the data teach? Student evaluation and its report.

- :mod:`~resources.evaluation.student_sft` - SFT the student on a dataset (TRL), held-out loss, paired comparison
- :mod:`~resources.evaluation.judge` - pairwise preference of a judge model between two students' answers
- :mod:`~resources.evaluation.diversity` - distinct-n and pairwise ROUGE-L of a set of instructions
- :mod:`~resources.evaluation.report` - PNG plots and the markdown report page
"""
