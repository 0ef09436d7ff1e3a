//! What the admin dashboard shows at a glance (to be written).
