//! Dissection outputs for people: CSV, JSON, HTML report, SVG plots, image strips.
