"""ModelFacts of a walked pickle: producers from the estimator libraries it imports."""

from __future__ import annotations

import sys

from mlenv.model.modelfacts import ModelFacts, Producer
from mlenv.observe.models.pickles import PickleFacts
from mlenv.observe.models.unsafe import is_unsafe

# Top-level modules of libraries whose estimators a pickle stores, and the PyPI project of each: the
# library a loader needs at the version that wrote the file.
ESTIMATOR_LIBRARIES = {
    "sklearn": "scikit-learn",
    "lightgbm": "lightgbm",
    "xgboost": "xgboost",
    "catboost": "catboost",
    "imblearn": "imbalanced-learn",
    "statsmodels": "statsmodels",
    "torch": "torch",
    "skorch": "skorch",
    "keras": "keras",
    "tensorflow": "tensorflow",
}
# Import names that differ from their PyPI project (others are their own project's name).
PROJECT_OF_MODULE = {
    **ESTIMATOR_LIBRARIES,
    "PIL": "pillow",
    "yaml": "pyyaml",
    "cv2": "opencv-python",
    "skimage": "scikit-image",
    "dateutil": "python-dateutil",
    "google": "protobuf",
}


def pickle_model_facts(
    facts: PickleFacts, fmt: str, *, extra: tuple[tuple[str, str], ...] = ()
) -> ModelFacts:
    """ModelFacts of a walked pickle (also torch's data.pkl): producers from the estimator libraries it
    imports, scikit-learn's version from the `_sklearn_version` its estimators carry."""
    globals_ = sorted(facts.globals)
    imports = tuple(sorted({f"{module}.{name}" for module, name in globals_}))
    unsafe = tuple(sorted({f"{module}.{name}" for module, name in globals_ if is_unsafe(module, name)}))
    tops = {module.split(".")[0] for module, _ in globals_}
    producers: list[Producer] = []
    unversioned: list[str] = []
    for top in sorted(tops & ESTIMATOR_LIBRARIES.keys()):
        library = ESTIMATOR_LIBRARIES[top]
        versions = facts.sklearn_versions if top == "sklearn" else facts.library_versions.get(library)
        if versions:
            producers += [Producer(library=library, version=v) for v in sorted(versions)]
        else:
            producers.append(Producer(library=library))
            unversioned.append(library)
    needs = sorted(
        {
            PROJECT_OF_MODULE.get(top, top)
            for top in tops
            if top not in sys.stdlib_module_names and top not in ("__builtin__", "__main__", "copy_reg")
        }
    )
    details = [("needs", project) for project in needs]
    if facts.protocol is not None:
        details.append(("pickle_protocol", str(facts.protocol)))
    details += extra
    note = None
    if unversioned:
        note = (
            f"the file records no version of {', '.join(unversioned)} "
            "(a pickle records scikit-learn's in each estimator's state, and XGBoost's in its booster)"
        )
    elif not producers:
        note = "the pickle stores no estimator of a known library, so it records no producer version"
    producers.sort(key=lambda p: (p.library, p.version or ""))
    return ModelFacts(
        format=fmt,
        producers=tuple(producers),
        details=tuple(sorted(details)),
        imports=imports,
        unsafe=unsafe,
        note=note,
    )
