//! Smart-grid subsystem (see issue: substation, load_balancer, charge_request).
