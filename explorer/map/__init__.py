"""The map: the Datashader points and their kernels, the mosaic of thumbnails, colour rules, the frame's size from the window, hover and the lasso/box selection."""
