"""facerec: face verification and recognition.

The public verbs live on `FaceRec` (see `facerec.api`); importing this package loads no model.
"""

from facerec.errors import FacerecError

__version__ = "0.1.0"
__all__ = ["FaceRec", "FacerecError", "__version__"]


def __getattr__(name: str):
    if name == "FaceRec":
        from facerec.api import FaceRec

        return FaceRec
    raise AttributeError(name)
