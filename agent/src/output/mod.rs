//! Log formats written by the agent.

pub mod eve;
