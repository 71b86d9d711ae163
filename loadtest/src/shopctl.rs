//! shopctl
