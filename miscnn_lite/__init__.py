"A notebook-first kit for teaching and running 3D medical image segmentation."
__version__ = "0.1.0"
