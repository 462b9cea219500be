//! Integration tests of the git kinds, on real repositories in temp dirs. Phases are built
//! through the registry's factories and run with a real `PhaseContext`, as the engine does.

mod changelog;
mod credentials;
mod engine;
mod inventory;
mod rollback;
mod snapshot;
mod support;
mod tag;
