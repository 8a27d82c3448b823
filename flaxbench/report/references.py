"""The full citations of the methods the report's notes name, for a paper's reference list."""

from __future__ import annotations

# (how the notes name the work, its citation)
REFERENCES = (
    ("Wilson", "Wilson EB. Probable inference, the law of succession, and statistical inference. Journal of the "
               "American Statistical Association. 1927;22(158):209–212."),
    ("Newcombe", "Newcombe RG. Improved confidence intervals for the difference between binomial proportions based "
                 "on paired data. Statistics in Medicine. 1998;17(22):2635–2650."),
    ("Zou and Donner", "Zou GY, Donner A. Construction of confidence limits about effect measures: a general "
                       "approach. Statistics in Medicine. 2008;27(10):1693–1702."),
    ("Hanley and McNeil", "Hanley JA, McNeil BJ. The meaning and use of the area under a receiver operating "
                          "characteristic (ROC) curve. Radiology. 1982;143(1):29–36."),
    ("DeLong", "DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more correlated receiver "
               "operating characteristic curves: a nonparametric approach. Biometrics. 1988;44(3):837–845."),
    ("Obuchowski", "Obuchowski NA. Nonparametric analysis of clustered ROC curve data. Biometrics. "
                   "1997;53(2):567–578."),
    ("Korn and Graubard", "Korn EL, Graubard BI. Confidence intervals for proportions with small expected number "
                          "of positive counts estimated from survey data. Survey Methodology. 1998;24(2):193–201."),
    ("McNemar", "McNemar Q. Note on the sampling error of the difference between correlated proportions or "
                "percentages. Psychometrika. 1947;12(2):153–157."),
    ("Holm", "Holm S. A simple sequentially rejective multiple test procedure. Scandinavian Journal of Statistics. "
             "1979;6(2):65–70."),
    ("Guo et al.", "Guo C, Pleiss G, Sun Y, Weinberger KQ. On calibration of modern neural networks. Proceedings "
                   "of the 34th International Conference on Machine Learning (ICML). 2017;70:1321–1330."),
)


def references_section(text: str) -> list[str]:
    """Markdown lines of a "References" section: the citation of each work `text` (the report so far) names;
    none where it names none."""
    cited = [citation for name, citation in REFERENCES if name in text]
    return ["", "## References", ""] + [f"- {citation}" for citation in cited] if cited else []
