//! `profiler fetch`: (being written)
