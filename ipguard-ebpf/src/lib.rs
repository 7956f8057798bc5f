//! Empty on purpose: the program is the `ipguard` binary target, built for
//! `bpfel-unknown-none` by ipguard-user's build.rs. This library target only lets
//! ipguard-user declare a build-dependency, so cargo rebuilds it when these sources change.
#![no_std]
