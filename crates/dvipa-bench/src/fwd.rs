//! TODO
use crate::Size;
use crate::report::Figure;

/// Runs the section.
pub fn run(_size: Size) -> anyhow::Result<Vec<Figure>> {
    anyhow::bail!("not implemented yet")
}
