"""Planning: percutaneous pedicle screws, tubular access, MIS TLIF, incisions, tissue spared.

From a CT, its vertebra label map and the :class:`~spinenav.anatomy.model.SpineModel`:

* :mod:`~spinenav.planning.plan` - the :class:`SurgicalPlan` document (``plan.json``);
* :mod:`~spinenav.planning.catalogue` - the implant catalogue (screws, rods, tubes, cages);
* :mod:`~spinenav.planning.screws` - screw trajectories, sizes, cortical margins, rods;
* :mod:`~spinenav.planning.access` - tubular corridors and the MIS TLIF corridor and cage;
* :mod:`~spinenav.planning.incisions` - skin entries merged into incisions;
* :mod:`~spinenav.planning.tissue` - open midline equivalent versus the MIS plan;
* :mod:`~spinenav.planning.procedure` - :func:`plan_procedure`, the one entry point;
* :mod:`~spinenav.planning.export` - plan.json, Slicer markups, STL, corridor label map.

>>> plan = plan_procedure(ct, spine, labels, levels=("L4", "L5"), procedure="tlif",   # doctest: +SKIP
...                       side="left")
>>> paths = write_plan(plan, "out/plan", ct, labels)                                  # doctest: +SKIP
"""

from spinenav.planning.plan import (SCHEMA, Cage, Corridor, CTFingerprint, Incision, PlanFlag, PlanningError,
                                    PlanningParameters, PlanSchemaError, ProcedureRequest, Rod, Screw,
                                    ScrewAlternative, SurgicalPlan, TissueComparison, ct_fingerprint, load_plan,
                                    plan_json_schema)
from spinenav.planning.procedure import plan_procedure, unfit_levels
from spinenav.planning.export import write_plan

__all__ = [
    "SCHEMA", "CTFingerprint", "Cage", "Corridor", "Incision", "PlanFlag", "PlanSchemaError", "PlanningError",
    "PlanningParameters", "ProcedureRequest", "Rod", "Screw", "ScrewAlternative", "SurgicalPlan", "TissueComparison",
    "ct_fingerprint", "load_plan", "plan_json_schema", "plan_procedure", "unfit_levels", "write_plan",
]
