//! The page in a real headless Chromium.
