//! Baudot TTY modem (owned by the tty branch).
