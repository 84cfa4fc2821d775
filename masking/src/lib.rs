//! Masking (detectors, validators, styles) arrives with the masking feature.
