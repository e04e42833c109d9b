package plugin

// Sweep's remote disk part: what runs leave under remote.work_dir.

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pikaci/vmexec/plugin/internal/incus"
	"github.com/pikaci/vmexec/plugin/internal/sshpool"
	"github.com/pikaci/vmexec/shared"
	"github.com/pikaci/vmexec/shared/layout"
)

// SweepDiskTimeout bounds the disk sweep of one host: the remote command
// is killed past it (timeout(1) on the remote side, the session closed on
// ours).
const SweepDiskTimeout = 10 * time.Minute

// sweepDiskScript runs on the remote host as
//
//	sh -c SCRIPT pikaci-sweep WORK_DIR AGE_SECS DRY
//
// with sweepDiskInput on its standard input: the live runs' ids (one a
// line) and the sources of the disk devices of the live instances, as
// quoted shell words (the lists can be long: never on the command line,
// whose one argument Linux caps at 128 KiB). It prints records of four
// NUL-terminated fields: STATUS KIND PATH DETAIL, STATUS being removed,
// would (a dry run), failed (DETAIL: rm's message) or skipped (DETAIL:
// why), KIND run, temp or snapshot; or the one record "absent WORK_DIR":
// the work dir does not exist there.
//
// An entry's age is the newest modification time of it and what lies below
// it: up to 3 levels for a run dir (its jobs, their dirs and files) and
// its temporary snapshot dirs whole; a snapshot dir's own, which a
// transfer, a publish and a reuse (StageWorkspaceSnapshot touches it)
// change, and its temporary dirs whole. A snapshot dir is first renamed
// aside (.pikaci-sweep-*, in snapshots/) and its age read again: one a
// job reused in the meantime is renamed back, never removed under it.
// Nothing is followed: a link where
// a directory was expected is named and left, runs/ and snapshots/ must
// resolve inside the work dir, and rm never crosses into another
// filesystem. Once timeout(1), its parent, is gone (the session was
// killed: the sweep was interrupted), it removes nothing more.
const sweepDiskScript = `set -u
w=$1 age=$2 dry=$3 live= plain= odd= retired=0
input=$(cat) && eval "$input" || exit 3
eval "set -- $odd"
n=$#
while [ "$n" -gt 0 ]; do
	r=$(readlink -m -- "$1") || exit 3
	set -- "$@" "$1" "$r"; shift; n=$((n - 1))
done
plains=
if [ -n "$plain" ]; then plains=$(eval "printf '%s\n' $plain && readlink -m -- $plain") || exit 3; fi
now=$(date +%s) || exit 3
say() { printf '%s\0' "$1" "$2" "$3" "$4"; }
newest() {
	if [ -n "$2" ]; then find "$1" -maxdepth "$2" -printf '%T@\n' 2>/dev/null
	else find "$1" -printf '%T@\n' 2>/dev/null; fi | awk '$1 > m { m = $1 } END { printf "%d\n", m }'
}
later() { if [ "$2" -gt "$1" ]; then echo "$2"; else echo "$1"; fi; }
old() { [ $((now - $1)) -gt "$age" ]; }
remove() {
	kill -0 "$PPID" 2>/dev/null || exit 4
	if [ "$dry" = 1 ]; then say would "$2" "$1" ""; return; fi
	# A snapshot may hold read-only dirs (a module cache): made writable
	# first, or rm fails on their contents for any user but root.
	find "${3:-$1}" -xdev -type d ! -perm -u=rwx -exec chmod u+rwx -- {} + 2>/dev/null
	if e=$(rm -rf --one-file-system -- "${3:-$1}" 2>&1); then say removed "$2" "$1" ""; else say failed "$2" "$1" "$e"; fi
}
retire() {
	if [ "$dry" = 1 ]; then remove "$1" snapshot; return; fi
	kill -0 "$PPID" 2>/dev/null || exit 4
	retired=$((retired + 1)); a="${1%/*}/.pikaci-sweep-$$-$retired"
	if ! e=$(mv -T -- "$1" "$a" 2>&1); then say failed snapshot "$1" "$e"; return; fi
	if old "$(newest "$a" 0)"; then remove "$1" snapshot "$a"; return; fi
	if mv -T -- "$a" "$1" 2>/dev/null; then say skipped snapshot "$1" "used while the sweep looked at it, kept"; return; fi
	remove "$1" snapshot "$a"
}
root=$(readlink -e -- "$w") && [ -d "$root" ] || { printf '%s\0' absent "$w"; exit 0; }
inside() { r=$(readlink -m -- "$1") || return 1; case $r in "$root"/*) return 0;; esac; return 1; }
dir() {
	if [ -L "$1" ]; then say skipped "$2" "$1" "a symlink, not followed"; return 1; fi
	[ -d "$1" ]
}
top() {
	[ -e "$1" ] || [ -L "$1" ] || return 1
	if [ -L "$1" ] || ! inside "$1"; then say skipped "$2" "$1" "a symlink or outside the work dir, not followed"; return 1; fi
	[ -d "$1" ]
}
if top "$w/runs" run; then
	for r in "$w"/runs/* "$w"/runs/.[!.]* "$w"/runs/..?*; do
		{ [ -e "$r" ] || [ -L "$r" ]; } && dir "$r" run || continue
		if printf '%s\n' "$live" | grep -qxF -e "${r##*/}"; then continue; fi
		t=$(newest "$r" 3)
		for x in "$r"/.pikaci-sync-snapshot-*; do
			[ -d "$x" ] && [ ! -L "$x" ] && t=$(later "$t" "$(newest "$x" "")")
		done
		if old "$t"; then remove "$r" run; continue; fi
		for x in "$r"/.pikaci-sync-snapshot-*; do
			{ [ -e "$x" ] || [ -L "$x" ]; } && dir "$x" temp || continue
			old "$(newest "$x" "")" && remove "$x" temp
		done
	done
fi
if top "$w/snapshots" snapshot; then
	for h in "$w"/snapshots/* "$w"/snapshots/.[!.]* "$w"/snapshots/..?*; do
		{ [ -e "$h" ] || [ -L "$h" ]; } && dir "$h" snapshot || continue
		t=$(newest "$h" 0)
		for x in "$h"/.pikaci-sync-snapshot-*; do
			[ -d "$x" ] && [ ! -L "$x" ] && t=$(later "$t" "$(newest "$x" "")")
		done
		used=0 rh=$(readlink -m -- "$h")
		for rs in "$@"; do
			case $rs in "$rh"|"$rh"/*|"$h"|"$h"/*) used=1; break;; esac
		done
		if [ "$used" = 0 ] && [ -n "$plains" ] && printf '%s\n' "$plains" | H=$h RH=$rh awk '
			function under(s, d) { return s == d || index(s, d "/") == 1 }
			under($0, ENVIRON["H"]) || under($0, ENVIRON["RH"]) { found = 1; exit }
			END { exit !found }'; then used=1; fi
		if [ "$used" = 0 ] && old "$t"; then retire "$h"; continue; fi
		for x in "$h"/.pikaci-sync-snapshot-*; do
			{ [ -e "$x" ] || [ -L "$x" ]; } && dir "$x" temp || continue
			old "$(newest "$x" "")" && remove "$x" temp
		done
	done
fi
exit 0
`

// sweepDiskCommand is the one remote command that sweeps workDir on a
// host, every argument quoted; sweepDiskInput goes on its standard input.
func sweepDiskCommand(workDir string, olderThan time.Duration, dry bool) string {
	d := "0"
	if dry {
		d = "1"
	}
	secs := int64(SweepDiskTimeout / time.Second)
	args := []string{"exec timeout -k 5", strconv.FormatInt(secs, 10), "sh -c", layout.Quote(sweepDiskScript), "pikaci-sweep",
		layout.Quote(workDir), strconv.FormatInt(int64(olderThan/time.Second), 10), d}
	return strings.Join(args, " ")
}

// sweepDiskInput is what sweepDiskScript reads and evaluates: the live
// runs (live), and the live sources as quoted words, those without a
// newline (plain: the script resolves them with one readlink, one a line)
// apart from those with one (odd: one readlink each). The script compares
// a snapshot dir with each source as given and as resolved.
func sweepDiskInput(liveRuns, liveSources []string) []byte {
	var plain, odd []string
	for _, s := range liveSources {
		if strings.Contains(s, "\n") {
			odd = append(odd, layout.Quote(s))
		} else {
			plain = append(plain, layout.Quote(s))
		}
	}
	return []byte("live=" + layout.Quote(strings.Join(liveRuns, "\n")) +
		"\nplain=" + layout.Quote(strings.Join(plain, " ")) +
		"\nodd=" + layout.Quote(strings.Join(odd, " ")) + "\n")
}

// diskLive returns the live runs (from live's "run:job" pairs and the
// instances this sweep keeps whose heartbeat is fresh, or unreadable) and
// the disk sources those instances mount, both sorted.
func diskLive(list []incus.InstanceInfo, live, deleted []string, now time.Time) (runs, sources []string) {
	runSet, srcSet := map[string]bool{}, map[string]bool{}
	for _, l := range live {
		// A run id may hold ':' itself ("a:b:job" is run "a:b", job "job",
		// or run "a", job "b:job"): every run the entry can name is kept,
		// as keeping too much is safe.
		for i, c := range l {
			if c == ':' {
				runSet[l[:i]] = true
			}
		}
	}
	for _, inst := range list {
		run, ok := inst.Config[shared.LabelRun]
		if !ok || slices.Contains(deleted, inst.Name) || !beatFresh(inst.Config, now) {
			continue
		}
		runSet[run] = true
		for _, d := range inst.Devices {
			if d["type"] == "disk" && d["source"] != "" {
				srcSet[d["source"]] = true
			}
		}
	}
	return slices.Sorted(maps.Keys(runSet)), slices.Sorted(maps.Keys(srcSet))
}

// beatFresh says whether an instance's run lives: its heartbeat (its
// creation, without one) is younger than shared.StaleAfter, or cannot be
// read (not ours to judge: kept).
func beatFresh(cfg map[string]string, now time.Time) bool {
	_, t, ok := heartbeat(cfg)
	return !ok || now.Sub(t) < shared.StaleAfter
}

// sweepDisk sweeps workDir on host with one command and adds what it did to
// res.
func sweepDisk(ctx context.Context, pool *sshpool.Pool, host, workDir string, olderThan time.Duration, dry bool, liveRuns, liveSources []string, res *shared.SweepResult) error {
	ctx, cancel := context.WithTimeout(ctx, SweepDiskTimeout+10*time.Second)
	defer cancel()
	out, err := pool.RunInput(ctx, host, sweepDiskCommand(workDir, olderThan, dry), sweepDiskInput(liveRuns, liveSources))
	if err != nil {
		// What was removed before the failure (a timeout, a lost session)
		// is still said: the whole records that came.
		_ = parseSweepDisk(wholeRecords(out.Stdout), host, workDir, res)
		return fmt.Errorf("sweep work dir %s on %s (bound %s): %w", shared.Show(workDir), host, SweepDiskTimeout, err)
	}
	return parseSweepDisk(out.Stdout, host, workDir, res)
}

// maxSweepFailures bounds the failed removals a disk sweep's error names.
const maxSweepFailures = 10

// truncate is s cut to at most n bytes, marked when cut.
// wholeRecords is out cut after its last whole record of four fields.
func wholeRecords(out []byte) []byte {
	end, n := 0, 0
	for i, b := range out {
		if b == 0 {
			if n++; n%4 == 0 {
				end = i + 1
			}
		}
	}
	return out[:end]
}

// parseSweepDisk reads sweepDiskScript's records into res; the failed
// removals are the error.
func parseSweepDisk(out []byte, host, workDir string, res *shared.SweepResult) error {
	fields := bytes.Split(out, []byte{0})
	if len(fields) > 0 && len(fields[len(fields)-1]) == 0 {
		fields = fields[:len(fields)-1]
	}
	if len(fields) == 2 && string(fields[0]) == "absent" {
		res.Skipped = append(res.Skipped, fmt.Sprintf("%s:%s: no such directory there", host, workDir))
		return nil
	}
	if len(fields)%4 != 0 {
		return shared.Errorf(shared.ErrUnavailable, "remote.host", host,
			"sweep work dir %s on %s: unexpected answer %s", shared.Show(workDir), host, shared.Show(string(out)))
	}
	var failed []string
	for i := 0; i < len(fields); i += 4 {
		status, p, detail := string(fields[i]), string(fields[i+2]), string(fields[i+3])
		switch status {
		case "removed", "would":
			res.Removed = append(res.Removed, host+":"+p)
		case "skipped":
			res.Skipped = append(res.Skipped, host+":"+p+": "+detail)
		case "failed":
			failed = append(failed, fmt.Sprintf("%s: %s", shared.Show(p), shared.Show(shared.Shorten(strings.TrimSpace(detail), 512))))
		default:
			return shared.Errorf(shared.ErrUnavailable, "remote.host", host,
				"sweep work dir %s on %s: unexpected record %s", shared.Show(workDir), host, shared.Show(status))
		}
	}
	if len(failed) > 0 {
		// rm's messages are the remote's words: each is quoted, and at most
		// maxSweepFailures are named.
		more := ""
		if n := len(failed) - maxSweepFailures; n > 0 {
			failed, more = failed[:maxSweepFailures], fmt.Sprintf("; and %d more", n)
		}
		return shared.Errorf(shared.ErrUnavailable, "remote.work_dir", workDir,
			"sweep work dir %s on %s: could not remove %s%s", shared.Show(workDir), host, strings.Join(failed, "; "), more)
	}
	return nil
}
