"""A third-party finding for svgbench: a claim checked on the records of a task, one row per dataset.

Add it to the findings table (results/findings.md, .csv, .json) with:
    svgbench --plugin examples/my_finding.py report
It reads the `knn` task's records: on a dataset without them its row is inconclusive, saying so.
"""

from svgbench.tasks import register_finding
from svgbench.tasks.comparison import diff_finding, sign_verdict


def ssl_retrieves_better_than_vae(spec, results, data, roles):
    """kNN top-1 of the SSL encoder SVG wraps minus the VAE's, paired over the test images both classified, with
    its bootstrap interval: holds when the whole interval is above 0."""
    return diff_finding(spec, results, data, roles["ssl"], roles[spec.vae_role], sign_verdict,
                        "the SSL encoder's neighbours share their class more often")


register_finding("X1", "the SSL encoder retrieves its class better than the VAE (kNN top-1)",
                 ssl_retrieves_better_than_vae, reads=("knn",), metric="knn_top1_k20", vae_role="vae")
