//! The policy: pure logic, tested without a kernel. Time is passed in; decisions come out
//! as commands that the daemon applies to the kernel maps.

pub mod compile;
pub mod engine;
pub mod window;
