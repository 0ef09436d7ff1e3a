//! Admin UI tests: releases (to be written).
