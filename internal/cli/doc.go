// Package cli is the core that hv's command packages share: App (the streams,
// the global flags, and the hvd connection, local or a remote's), output in
// table, JSON or YAML, progress and operation waits, REMOTE:VM arguments,
// usage errors and exit codes, shell completion helpers, and command groups.
// The commands themselves live in cmd/hv and in the *cmd packages below this one.
package cli
