"""Analysis of datasets: detection of class-wise convolution, image-quality metrics, spectra."""
