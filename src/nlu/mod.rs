//! nlu (in progress).
