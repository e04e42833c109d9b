package plugin

// Preflight (shared.Preflighter): what a whole job needs of its remote
// host, checked in a few seconds without changing anything.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pikaci/vmexec/plugin/internal/sshpool"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

var _ shared.Preflighter = (*Executor)(nil)

// PreflightCheckTimeout bounds each check of Preflight.
const PreflightCheckTimeout = 15 * time.Second

// MinFreeDisk is the free space Preflight wants on the filesystem of
// remote.work_dir.
const MinFreeDisk = 1 << 30

// Preflight checks, in order, stopping at the first that fails: the SSH
// alias in the ssh config, the login (host key and key), remote.work_dir
// writable (its nearest existing folder, as mkdir -p would create the rest)
// with MinFreeDisk free, the Incus API, the project, the image alias, each
// profile. Only invalid input is an error; a failed check is a Check.
func (e *Executor) Preflight(ctx context.Context, req shared.PreflightRequest) (shared.PreflightResult, error) {
	job := req.Job
	if err := job.CheckRuntime(); err != nil {
		return shared.PreflightResult{}, err
	}
	if err := layout.CheckAbsClean("remote.work_dir", job.Remote.WorkDir); err != nil {
		return shared.PreflightResult{}, err
	}
	pool, err := e.sshPool()
	if err != nil {
		return shared.PreflightResult{}, err
	}
	var res shared.PreflightResult
	// check runs one check, bounded; false stops the preflight.
	check := func(name string, f func(ctx context.Context) (detail, fix string, err error)) bool {
		cctx, cancel := context.WithTimeout(ctx, PreflightCheckTimeout)
		defer cancel()
		detail, fix, err := f(cctx)
		c := shared.Check{Name: name, OK: err == nil, Detail: detail}
		if err != nil {
			c.Detail, c.Fix = err.Error(), fix
		}
		res.Checks = append(res.Checks, c)
		return err == nil
	}
	host := job.Remote.Host
	if !shared.IsLocalHost(host) {
		var info sshpool.HostInfo
		ok := check(fmt.Sprintf("ssh host %s in the ssh config", shared.Show(host)), func(context.Context) (string, string, error) {
			var err error
			info, err = pool.Lookup(host)
			if err != nil {
				return "", "fix the ssh config", err
			}
			if !info.InConfig {
				files := "~/.ssh/config"
				if len(info.ConfigFiles) > 0 {
					files = strings.Join(info.ConfigFiles, ", ")
				}
				return "", fmt.Sprintf("add \"Host %s\" with its HostName, User and IdentityFile to %s, or fix remote.host", host, files),
					fmt.Errorf("no Host block in %s names %s", files, shared.Show(host))
			}
			return info.Describe, "", nil
		})
		if !ok {
			return res, nil
		}
		ok = check(fmt.Sprintf("ssh login to %s (host key known, key accepted)", shared.Show(host)), func(ctx context.Context) (string, string, error) {
			if _, err := pool.Run(ctx, host, "true"); err != nil {
				return "", loginFix(err, info), err
			}
			return "logged in", "", nil
		})
		if !ok {
			return res, nil
		}
	}
	work := job.Remote.WorkDir
	ok := check(fmt.Sprintf("remote.work_dir %s writable, at least %s free", shared.Show(work), humanBytes(MinFreeDisk)), func(ctx context.Context) (string, string, error) {
		return checkWorkDir(ctx, pool, host, work)
	})
	if !ok {
		return res, nil
	}
	ep, err := e.endpoint(ctx, pool, job.Remote)
	if err != nil {
		return shared.PreflightResult{}, err
	}
	raw := job.Remote.Incus.EndpointOrDefault()
	ok = check(fmt.Sprintf("Incus API at %s", raw), func(ctx context.Context) (string, string, error) {
		s, err := ep.serverInfo(ctx)
		if err != nil {
			return "", "check remote.incus.endpoint, and that incus (or lxd) runs on the remote host and your user may use its socket", err
		}
		return fmt.Sprintf("%s %s, api %s", s.Environment.Server, s.Environment.ServerVersion, s.APIVersion), "", nil
	})
	if !ok {
		return res, nil
	}
	project := job.Remote.Incus.ProjectOrDefault()
	ok = check(fmt.Sprintf("project %s", shared.Show(project)), func(ctx context.Context) (string, string, error) {
		if err := ep.client.Project(ctx, project); err != nil {
			return "", fmt.Sprintf("incus project create %s (lxc project create %s on LXD); then give it the images and profiles it needs", project, project), err
		}
		return "exists", "", nil
	})
	if !ok {
		return res, nil
	}
	rt := job.Runtime.WithDefaults()
	ok = check(fmt.Sprintf("image alias %s in project %s", shared.Show(rt.Image), shared.Show(project)), func(ctx context.Context) (string, string, error) {
		fp, err := ep.client.ImageAlias(ctx, project, rt.Image)
		if err != nil {
			return "", fmt.Sprintf("incus image import IMAGE-FILES --alias %s --project %s (or incus image copy REMOTE:IMAGE local: --alias %s --project %s)", rt.Image, project, rt.Image, project), err
		}
		return "fingerprint " + fp, "", nil
	})
	if !ok {
		return res, nil
	}
	for _, prof := range append([]string{shared.DefaultProfile}, rt.Profiles...) {
		ok = check(fmt.Sprintf("profile %s in project %s", shared.Show(prof), shared.Show(project)), func(ctx context.Context) (string, string, error) {
			if err := ep.client.Profile(ctx, project, prof); err != nil {
				return "", fmt.Sprintf("incus profile create %s --project %s, or remove it from runtime.profiles", prof, project), err
			}
			return "exists", "", nil
		})
		if !ok {
			return res, nil
		}
	}
	return res, nil
}

// loginFix says what to do about a failed login.
func loginFix(err error, info sshpool.HostInfo) string {
	var hke *sshpool.HostKeyError
	if errors.As(err, &hke) {
		if hke.Changed || hke.Revoked {
			return "verify the host's key out of band before you trust it again (see the error)"
		}
		port := ""
		if info.Port != 0 && info.Port != 22 {
			port = "-p " + strconv.Itoa(info.Port) + " "
		}
		return fmt.Sprintf("check the fingerprint %s out of band, then: ssh-keyscan %s%s >> %s", hke.Fingerprint, port, info.HostName, hke.KnownHostsFile)
	}
	if errors.Is(err, shared.ErrPermission) {
		return "give the ssh config an IdentityFile the remote user accepts (ssh-copy-id), or run an ssh agent holding one"
	}
	return "check that the host is up and sshd listens (ssh -v " + info.HostName + ")"
}

// checkWorkDir checks, with one command, that the nearest existing folder
// of dir is a writable folder and has MinFreeDisk free.
func checkWorkDir(ctx context.Context, pool *sshpool.Pool, host, dir string) (detail, fix string, err error) {
	cmd := "d=" + layout.Quote(dir) + `; while [ ! -e "$d" ] && [ ! -L "$d" ]; do d=$(dirname -- "$d"); done; ` +
		`printf '%s\n' "$d"; if [ -d "$d" ] && [ -w "$d" ] && [ -x "$d" ]; then echo writable; else echo not-writable; fi; ` +
		`df -Pk -- "$d" | awk 'NR==2 {print $4}'`
	out, err := pool.Run(ctx, host, cmd)
	if err != nil {
		return "", "check that the remote shell works: ssh " + host + " true", err
	}
	lines := strings.Split(strings.TrimRight(string(out.Stdout), "\n"), "\n")
	if len(lines) != 3 {
		return "", "", fmt.Errorf("remote.work_dir %s: unexpected answer %q", shared.Show(dir), out.Stdout)
	}
	existing, writable := lines[0], lines[1] == "writable"
	if !writable {
		return "", fmt.Sprintf("create it with the right owner: ssh %s sudo install -d -o USER %s", host, layout.Quote(dir)),
			fmt.Errorf("remote.work_dir %s: %s is not a folder the ssh user may write", shared.Show(dir), shared.Show(existing))
	}
	kb, perr := strconv.ParseInt(strings.TrimSpace(lines[2]), 10, 64)
	if perr != nil {
		return "", "", fmt.Errorf("remote.work_dir %s: df of %s answered %q", shared.Show(dir), shared.Show(existing), lines[2])
	}
	free := kb * 1024
	if free < MinFreeDisk {
		return "", "free space on the remote host (runner-host sweep removes what old runs left)",
			fmt.Errorf("remote.work_dir %s: %s free on the filesystem of %s, want at least %s", shared.Show(dir), humanBytes(free), shared.Show(existing), humanBytes(MinFreeDisk))
	}
	where := "exists"
	if existing != dir {
		where = "created under " + shared.Show(existing)
	}
	return fmt.Sprintf("%s, %s free", where, humanBytes(free)), "", nil
}

// humanBytes prints n in the largest binary unit that keeps it at least 1.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
