package host

import (
	"context"
	"fmt"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/operation"
)

var errBackupTODO = fmt.Errorf("backups are being built: %w", errdefs.ErrUnavailable)

func (s *Service) CreateBackup(name string, req api.BackupCreate) (*operation.Op, error) {
	return nil, errBackupTODO
}
func (s *Service) ListBackups(name string) ([]api.Backup, error) { return nil, errBackupTODO }
func (s *Service) GetBackup(name, backup string) (api.Backup, error) {
	return api.Backup{}, errBackupTODO
}
func (s *Service) BackupChanges(ctx context.Context, name, backup, disk string) ([]api.Extent, error) {
	return nil, errBackupTODO
}
func (s *Service) FinishBackup(ctx context.Context, name, backup string) (api.ReferencePoint, error) {
	return api.ReferencePoint{}, errBackupTODO
}
func (s *Service) AbortBackup(ctx context.Context, name, backup string) error { return errBackupTODO }
func (s *Service) Tracking(ctx context.Context, name string) (api.ChangeTracking, error) {
	return api.ChangeTracking{}, errBackupTODO
}
func (s *Service) DeleteReferencePoint(ctx context.Context, name, reference string) error {
	return errBackupTODO
}
