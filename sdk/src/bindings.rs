//! The generated component bindings, one module per world.
//!
//! They are generated from `wit/v0.2/` (`switchyard:plugin@0.2.0`), the
//! contract this SDK targets; the folder is named rather than `wit/` itself
//! because every released version of the contract lives there side by side.
//!
//! `base` is a world of this crate's own that only imports the host interface;
//! it is generated once so that every kind shares the same `types` and `host`
//! Rust items (one `Metadata`, one `log`), instead of one copy per world.

#![allow(missing_docs, clippy::all)]

pub mod base {
    wit_bindgen::generate!({
        inline: "
            package switchyard:sdk;
            world base {
                import switchyard:plugin/host@0.2.0;
                import switchyard:plugin/types@0.2.0;
            }
        ",
        path: "../wit/v0.2",
        world: "switchyard:sdk/base",
        runtime_path: "switchyard_sdk::__private::wit_bindgen::rt",
        generate_unused_types: true,
        generate_all,
        // Lets plugin tests compare usage and quota values directly.
        additional_derives: [PartialEq],
    });
}

#[cfg(feature = "adapter")]
pub mod adapter {
    wit_bindgen::generate!({
        path: "../wit/v0.2",
        world: "switchyard:plugin/adapter-plugin",
        runtime_path: "switchyard_sdk::__private::wit_bindgen::rt",
        additional_derives: [PartialEq],
        with: {
            "switchyard:plugin/types@0.2.0": crate::bindings::base::switchyard::plugin::types,
            "switchyard:plugin/host@0.2.0": crate::bindings::base::switchyard::plugin::host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_adapter_world",
    });
}

#[cfg(feature = "strategy")]
pub mod strategy {
    wit_bindgen::generate!({
        path: "../wit/v0.2",
        world: "switchyard:plugin/strategy-plugin",
        runtime_path: "switchyard_sdk::__private::wit_bindgen::rt",
        with: {
            "switchyard:plugin/types@0.2.0": crate::bindings::base::switchyard::plugin::types,
            "switchyard:plugin/host@0.2.0": crate::bindings::base::switchyard::plugin::host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_strategy_world",
    });
}

#[cfg(feature = "evaluator")]
pub mod evaluator {
    wit_bindgen::generate!({
        path: "../wit/v0.2",
        world: "switchyard:plugin/evaluator-plugin",
        runtime_path: "switchyard_sdk::__private::wit_bindgen::rt",
        with: {
            "switchyard:plugin/types@0.2.0": crate::bindings::base::switchyard::plugin::types,
            "switchyard:plugin/host@0.2.0": crate::bindings::base::switchyard::plugin::host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_evaluator_world",
    });
}
