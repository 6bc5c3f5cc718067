"""The ugriz augmentation recipe's survey numbers, as the SDSS survey gives them (for tests that build the recipe
without a survey)."""
from core.surveys.sdss import EXTINCTION_R, WAVELENGTH_A, SDSS

UGRIZ = {"extinction": EXTINCTION_R, "wavelengths": WAVELENGTH_A, "pixel_scale": SDSS.pixel_scale_arcsec}
