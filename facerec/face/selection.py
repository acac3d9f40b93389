"""The one rule for "which face is this photo of", shared by enrollment, verification, calibration,
evaluation, training and liveness.

A face counts as *prominent* when its area is at least `PROMINENT_AREA_RATIO` of the largest face's; smaller
faces are bystanders and never decide. Among the prominent faces the subject is the one nearest the image
centre (photos are framed on their subject: LFW's named person is centred, so are CelebA's crops and a door
camera's visitor). A photo that must show one person is refused when more than one face is prominent, unless
the caller asks for the subject explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from facerec.face.detect import Detection

# A bystander is a face under half the main face's area (the rule the training crops were first built with).
PROMINENT_AREA_RATIO = 0.5


@dataclass(frozen=True)
class Selection:
    subject: Detection
    prominent: int  # how many faces were prominent (the subject included)

    @property
    def ambiguous(self) -> bool:
        return self.prominent > 1


def select_subject(detections: Sequence[Detection], image_shape: tuple[int, ...]) -> Selection | None:
    """The subject among `detections` (None when there is no face)."""
    if not detections:
        return None
    largest = max(d.area for d in detections)
    prominent = [d for d in detections if d.area >= PROMINENT_AREA_RATIO * largest]
    cy, cx = image_shape[0] / 2.0, image_shape[1] / 2.0

    def off_centre(d: Detection) -> float:
        return math.hypot((d.box[0] + d.box[2]) / 2.0 - cx, (d.box[1] + d.box[3]) / 2.0 - cy)

    subject = min(enumerate(prominent), key=lambda item: (off_centre(item[1]), item[0]))[1]
    return Selection(subject, len(prominent))
