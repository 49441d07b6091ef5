"""Why this prediction: which input tokens caused it (attribution), where in the model it was decided (activation
patching), heads with a job (induction heads), and what else the model could have said (branches)."""

from demos.attention.maps import USES
from demos.why_this_prediction.tab import DEMO_ID, why_tab
from hub.demo import Demo

DEMO = Demo(
    id=DEMO_ID,
    title="Why this prediction",
    default_model="",
    load=None,
    build_tiny=None,
    tab=why_tab,
    uses=USES,
)
