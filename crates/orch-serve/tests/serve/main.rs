//! Tests of `orch serve` over real HTTP: the API, the event stream, security, and the page
//! in a real headless Chromium.

// Test code unwraps freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod api;
mod browser;
mod security;
mod support;
