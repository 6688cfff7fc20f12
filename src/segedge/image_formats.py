"""Image file extensions segedge reads and writes, in a module of its own: the CLI lists folders with them
without importing OpenCV (``--help`` stays fast)."""

#: Extensions :func:`write_image` encodes (OpenCV's encoders available in every opencv wheel).
WRITE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: Extensions of the image files taken from a folder (everything OpenCV's wheels decode).
READ_EXTENSIONS = WRITE_EXTENSIONS + (
    ".gif",
    ".jfif",
    ".jpe",
    ".jp2",
    ".pbm",
    ".pgm",
    ".ppm",
    ".pnm",
    ".pxm",
    ".ras",
    ".sr",
)
