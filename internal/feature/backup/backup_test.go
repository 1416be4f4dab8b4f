package backup

import (
	"errors"
	"strings"
	"testing"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
)

func TestCheckBackupRequest(t *testing.T) {
	ref := "0123456789abcdef"
	req, since, err := checkBackupRequest("web", api.BackupCreate{Since: &ref})
	if err != nil || since != ref || req.Consistency != api.ConsistencyApplication {
		t.Fatalf("defaults: %+v %q %v", req, since, err)
	}
	empty := ""
	if _, since, err := checkBackupRequest("web", api.BackupCreate{Since: &empty, Consistency: "crash"}); err != nil || since != "" {
		t.Fatalf("an empty since is a full backup: %q %v", since, err)
	}
	bad := func(s string) *string { return &s }
	for _, c := range []struct {
		req  api.BackupCreate
		want string
	}{
		{api.BackupCreate{Consistency: "vss"}, "consistency"},
		{api.BackupCreate{Timeout: -1}, "timeout"},
		{api.BackupCreate{Timeout: 1 << 62}, "timeout"},
		{api.BackupCreate{FreezeTimeout: -5}, "freeze_timeout"},
		{api.BackupCreate{Since: bad("../../etc")}, "since"},
		{api.BackupCreate{Since: bad("0123456789ABCDEF")}, "since"},
		{api.BackupCreate{Since: bad("0123456789abcde")}, "since"},
	} {
		_, _, err := checkBackupRequest("web", c.req)
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.HasPrefix(err.Error(), c.want+":") {
			t.Errorf("%+v: %v, want an invalid-input error naming %s", c.req, err, c.want)
		}
	}
}

func TestActionsDuringBackup(t *testing.T) {
	for _, a := range []string{api.ActionStart, api.ActionStop, api.ActionSave, "set", "delete", "devices", "checkpoint", "checkpoint-change", "export", "backup"} {
		if allowedDuringBackup[a] {
			t.Errorf("%s changes the disks a backup reads, yet is allowed during one", a)
		}
	}
}
