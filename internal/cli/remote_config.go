package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"time"

	"github.com/hvproject/hv/client"
	"github.com/hvproject/hv/internal/fsutil"
	"github.com/hvproject/hv/internal/tlsid"
	"github.com/hvproject/hv/internal/trust"
	"github.com/hvproject/hv/internal/validate"
)

// LocalRemote names hvd on the unix socket (--socket, HV_SOCKET).
const LocalRemote = "local"

// The client's files, in its configuration directory.
const (
	RemotesFile = "remotes.json"
	ClientKey   = "client.key"
	clientCert  = "client.crt"
)

// RemoteConfig is remotes.json: the hosts this client may talk to over
// the network, and the default one ("" or "local": the unix socket).
type RemoteConfig struct {
	Default string                 `json:"default,omitempty"`
	Remotes map[string]RemoteEntry `json:"remotes"`
}

// RemoteEntry is one remote host.
type RemoteEntry struct {
	Address     string    `json:"address"`
	Fingerprint string    `json:"fingerprint"`
	TrustedAs   string    `json:"trusted_as,omitempty"` // this client's name there
	Role        string    `json:"role,omitempty"`
	AddedAt     time.Time `json:"added_at"`
}

// ConfigDir is where the client keeps its key, certificate and remotes:
// $HV_CONFIG_DIR, else ~/.config/hv. "" when neither is known.
func (a *App) ConfigDir() string {
	if d := a.Getenv("HV_CONFIG_DIR"); d != "" {
		return d
	}
	if h := a.Getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "hv")
	}
	return ""
}

// NeedConfigDir is ConfigDir for commands that write there: it fails when no directory can be found.
func (a *App) NeedConfigDir() (string, error) {
	dir := a.ConfigDir()
	if dir == "" {
		return "", fmt.Errorf("no configuration directory for remotes: set HV_CONFIG_DIR (or HOME, for ~/.config/hv)")
	}
	return dir, nil
}

// LoadRemotes reads remotes.json in dir; none yet is an empty list. The
// file is the user's to edit, so it is checked as it is read.
func LoadRemotes(dir string) (RemoteConfig, error) {
	cfg := RemoteConfig{Remotes: map[string]RemoteEntry{}}
	if dir == "" {
		return cfg, nil
	}
	path := filepath.Join(dir, RemotesFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("%s: %v; fix the file or remove it (its remotes are then forgotten)", path, err)
	}
	if cfg.Remotes == nil {
		cfg.Remotes = map[string]RemoteEntry{}
	}
	for name, r := range cfg.Remotes {
		if err := CheckRemoteName(name); err != nil {
			return cfg, fmt.Errorf("%s: %w", path, err)
		}
		if err := trust.CheckAddress("address", r.Address); err != nil {
			return cfg, fmt.Errorf("%s: remote %s: %w", path, name, err)
		}
		if _, err := tlsid.ParseFingerprint("fingerprint", r.Fingerprint); err != nil {
			return cfg, fmt.Errorf("%s: remote %s: %w", path, name, err)
		}
	}
	if _, ok := cfg.Remotes[cfg.Default]; cfg.Default != "" && cfg.Default != LocalRemote && !ok {
		return cfg, fmt.Errorf("%s: the default remote %q is not among the remotes; switch to another (hv remote switch NAME)", path, cfg.Default)
	}
	return cfg, nil
}

// SaveRemotes writes cfg to dir's remotes file.
func SaveRemotes(dir string, cfg RemoteConfig) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, RemotesFile), append(data, '\n'), 0o600)
}

// CheckRemoteName refuses names that cannot prefix a VM (NAME:vm).
func CheckRemoteName(name string) error {
	if err := validate.Name("remote name", name); err != nil {
		return err
	}
	if name == LocalRemote {
		return fmt.Errorf("remote name: %q is this machine's hvd on its unix socket; choose another name", name)
	}
	return nil
}

// Names are the remotes' names, sorted.
func (cfg RemoteConfig) Names() []string {
	out := make([]string, 0, len(cfg.Remotes))
	for n := range cfg.Remotes {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// IdentityFiles are this client's key and certificate in dir.
func IdentityFiles(dir string) tlsid.Files {
	return tlsid.Files{Dir: dir, Key: ClientKey, Cert: clientCert}
}

// ClientName is the common name of a certificate hv makes: who made it,
// for the host's admin to recognize it in the trust list.
func ClientName() string {
	who := "hv"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	host, _ := os.Hostname()
	return "hv client " + who + "@" + host
}

// Connect picks the hvd this command talks to: the remote a NAME:vm
// argument or --remote names, else the default remote, else the unix
// socket (also when --socket is given on the command line).
func (a *App) Connect() error {
	name := a.RemoteName
	dir := a.ConfigDir()
	cfg, err := LoadRemotes(dir)
	if err != nil {
		return err
	}
	if name == "" && !a.SocketFlag {
		name = cfg.Default
	}
	if name == "" || name == LocalRemote {
		a.target, a.cl = LocalRemote, client.New(a.Socket)
		return nil
	}
	r, ok := cfg.Remotes[name]
	if !ok {
		return fmt.Errorf("no remote is named %q; list them with: hv remote list", name)
	}
	id, err := tlsid.Load(IdentityFiles(dir))
	if err != nil {
		return fmt.Errorf("remote %s: this client's certificate: %w; add the remote again (hv remote add)", name, err)
	}
	a.cl, err = client.NewRemote(r.Address, id.Cert, r.Fingerprint)
	if err != nil {
		return fmt.Errorf("remote %s: %w", name, err)
	}
	a.target = name
	return nil
}
