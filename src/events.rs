//! The event system, where the RustAxum document imports it from
//! (`use rustaxum::events::{Event, ShouldBroadcast, EventFacade}`): the same items as
//! [`crate::broadcasting::event`].

pub use crate::broadcasting::event::{
    dispatch, listen, Broadcastable, Event, EventFacade, EventFake, EventPayload, ShouldBroadcast, ShouldQueue,
};
