//! Speech recognition: the `Recognizer` trait, Vosk and PocketSphinx backends, endpointing (in progress).
