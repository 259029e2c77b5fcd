//! Time windows and the scheduler (SPEC §3).
