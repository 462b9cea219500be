//! Integration tests of the engine, in process: durable runs (the journal, crashes at every
//! byte, resume) and light phases (attempts polled by the engine loop).

mod durable;
mod light;
mod pipes;
mod scheduling;
mod watchdog;
