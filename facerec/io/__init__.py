"""Reading images safely: decode, EXIF orientation, colour modes, size limits, corrupt-file errors."""

from facerec.io.images import ImageInput, load_image, sha256_file

__all__ = ["ImageInput", "load_image", "sha256_file"]
