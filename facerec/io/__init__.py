"""Reading images safely: decode, EXIF orientation, colour modes, size limits, corrupt-file errors."""

from facerec.io.images import IMAGE_SUFFIXES, ImageInput, image_files, load_image, sha256_file

__all__ = ["IMAGE_SUFFIXES", "ImageInput", "image_files", "load_image", "sha256_file"]
