//! Tests of the rules that span the submodules.

use super::*;
