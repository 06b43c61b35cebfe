package check

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// services are the programs deploy/docker/Dockerfile builds besides the
// witnz CLI.
var services = []string{"alert", "anchor", "cdc-ingest", "gateway", "host-agent", "verifier", "witness"}

// secrets are the Secrets the kustomize base may reference; deploy/README.md
// documents how to create each.
var secrets = []string{"witnz-pki", "witnz-commit-key", "witnz-db"}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.work")); err != nil {
		t.Fatalf("repository root not found at %s: %v", root, err)
	}
	return root
}

// invocation is one way an artifact starts a program.
type invocation struct {
	where   string // artifact and entry, for messages
	service string
	args    []string
	env     map[string]string
	// pki is how `witnz pki init` is run for this artifact: the witness
	// ids and the host agent's host name its certificates are issued for.
	pki pkiLayout
}

type pkiLayout struct{ witnesses, hostname string }

var (
	composePKI = pkiLayout{"w1,w2,w3", "agent1"}
	k8sPKI     = pkiLayout{"witness-0,witness-1,witness-2", "node1"}
	systemdPKI = pkiLayout{"w1,w2,w3", "node1"}
)

// ---- kustomize ----

type k8sBase struct {
	workloads   map[string]corev1.PodTemplateSpec // by name
	kinds       map[string]string                 // workload name -> kind
	claims      map[string][]string               // StatefulSet volume claim templates
	images      map[string]bool
	configMaps  map[string]map[string]string
	invocations []invocation
}

func renderKustomize(t *testing.T, root string) *k8sBase {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(root, "deploy", "k8s"))
	if err != nil {
		t.Fatalf("kustomize build deploy/k8s: %v", err)
	}
	b := &k8sBase{
		workloads:  map[string]corev1.PodTemplateSpec{},
		kinds:      map[string]string{},
		claims:     map[string][]string{},
		images:     map[string]bool{},
		configMaps: map[string]map[string]string{},
	}
	var svcs []corev1.Service
	for _, r := range rm.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		kind, name := r.GetKind(), r.GetName()
		if kind != "Namespace" && r.GetNamespace() != "witnz" {
			t.Errorf("%s/%s is in namespace %q, want witnz", kind, name, r.GetNamespace())
		}
		strict := func(into any) {
			if err := yaml.UnmarshalStrict(doc, into); err != nil {
				t.Errorf("%s/%s does not decode strictly: %v", kind, name, err)
			}
		}
		switch kind {
		case "Namespace":
			strict(&corev1.Namespace{})
		case "ConfigMap":
			var cm corev1.ConfigMap
			strict(&cm)
			b.configMaps[name] = cm.Data
		case "PersistentVolumeClaim":
			strict(&corev1.PersistentVolumeClaim{})
		case "Service":
			var s corev1.Service
			strict(&s)
			svcs = append(svcs, s)
		case "Deployment":
			var d appsv1.Deployment
			strict(&d)
			b.workloads[name], b.kinds[name] = d.Spec.Template, kind
			checkSelector(t, kind, name, d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
		case "StatefulSet":
			var s appsv1.StatefulSet
			strict(&s)
			b.workloads[name], b.kinds[name] = s.Spec.Template, kind
			checkSelector(t, kind, name, s.Spec.Selector.MatchLabels, s.Spec.Template.Labels)
			for _, c := range s.Spec.VolumeClaimTemplates {
				b.claims[name] = append(b.claims[name], c.Name)
			}
			if s.Spec.Replicas == nil || *s.Spec.Replicas != 3 || s.Spec.ServiceName != "witness" {
				t.Errorf("StatefulSet %s: want 3 replicas behind Service witness", name)
			}
		case "DaemonSet":
			var d appsv1.DaemonSet
			strict(&d)
			b.workloads[name], b.kinds[name] = d.Spec.Template, kind
			checkSelector(t, kind, name, d.Spec.Selector.MatchLabels, d.Spec.Template.Labels)
		default:
			t.Errorf("unexpected kind %s (%s): add a strict check for it", kind, name)
		}
	}
	for _, s := range svcs {
		checkService(t, s, b.workloads)
	}
	for name, tmpl := range b.workloads {
		b.checkPod(t, name, tmpl)
	}
	return b
}

func checkSelector(t *testing.T, kind, name string, sel, labels map[string]string) {
	t.Helper()
	for k, v := range sel {
		if labels[k] != v {
			t.Errorf("%s %s: selector %s=%s does not match its pod labels %v", kind, name, k, v, labels)
		}
	}
}

func checkService(t *testing.T, s corev1.Service, workloads map[string]corev1.PodTemplateSpec) {
	t.Helper()
	for _, tmpl := range workloads {
		match := len(s.Spec.Selector) > 0
		for k, v := range s.Spec.Selector {
			match = match && tmpl.Labels[k] == v
		}
		if !match {
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.StrVal == "" {
				continue
			}
			if !slices.ContainsFunc(tmpl.Spec.Containers, func(c corev1.Container) bool { return hasPort(c, p.TargetPort.StrVal) }) {
				t.Errorf("Service %s: targetPort %q is no container port", s.Name, p.TargetPort.StrVal)
			}
		}
		return
	}
	t.Errorf("Service %s selects no workload", s.Name)
}

func hasPort(c corev1.Container, name string) bool {
	return slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == name })
}

var k8sVarRE = regexp.MustCompile(`\$\(([A-Z_]+)\)`)

func (b *k8sBase) checkPod(t *testing.T, name string, tmpl corev1.PodTemplateSpec) {
	t.Helper()
	volumes := map[string]bool{}
	for _, c := range b.claims[name] {
		volumes[c] = true
	}
	for _, v := range tmpl.Spec.Volumes {
		volumes[v.Name] = true
		if v.Secret != nil && !slices.Contains(secrets, v.Secret.SecretName) {
			t.Errorf("%s mounts Secret %q, not one of the documented %v", name, v.Secret.SecretName, secrets)
		}
	}
	for _, c := range tmpl.Spec.Containers {
		b.images[c.Image] = true
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				t.Errorf("%s/%s mounts undeclared volume %q", name, c.Name, m.Name)
			}
		}
		for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
			if p != nil && p.HTTPGet != nil && !hasPort(c, p.HTTPGet.Port.StrVal) {
				t.Errorf("%s/%s probes port %q it does not declare", name, c.Name, p.HTTPGet.Port.StrVal)
			}
		}
		svc, ok := strings.CutPrefix(c.Image, "witnz/")
		if !ok {
			continue
		}
		svc, _, _ = strings.Cut(svc, ":")
		if !slices.Contains(services, svc) {
			t.Errorf("%s/%s runs image %s, which deploy/docker/Dockerfile does not build", name, c.Name, c.Image)
			continue
		}
		env := map[string]string{}
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef == nil {
				continue
			}
			data, ok := b.configMaps[ef.ConfigMapRef.Name]
			if !ok {
				t.Errorf("%s/%s reads missing ConfigMap %q", name, c.Name, ef.ConfigMapRef.Name)
			}
			maps.Copy(env, data)
		}
		fieldValues := map[string]string{"metadata.name": name + "-0", "spec.nodeName": "node1"}
		for _, e := range c.Env {
			switch {
			case e.ValueFrom == nil:
				env[e.Name] = e.Value
			case e.ValueFrom.SecretKeyRef != nil:
				if !slices.Contains(secrets, e.ValueFrom.SecretKeyRef.Name) {
					t.Errorf("%s/%s reads Secret %q, not one of the documented %v", name, c.Name, e.ValueFrom.SecretKeyRef.Name, secrets)
				}
				env[e.Name] = "postgres://witnz@127.0.0.1:5432/app" // the only secret values passed as env are DSNs
			case e.ValueFrom.FieldRef != nil:
				env[e.Name] = fieldValues[e.ValueFrom.FieldRef.FieldPath]
			}
		}
		var args []string
		for _, a := range c.Args {
			args = append(args, k8sVarRE.ReplaceAllStringFunc(a, func(m string) string {
				v, ok := env[k8sVarRE.FindStringSubmatch(m)[1]]
				if !ok {
					t.Errorf("%s/%s: argument %q uses %s, which is not in the container's environment", name, c.Name, a, m)
				}
				return v
			}))
		}
		b.invocations = append(b.invocations, invocation{where: "deploy/k8s " + b.kinds[name] + " " + name, service: svc, args: args, env: env, pki: k8sPKI})
	}
}

func TestKustomizeBase(t *testing.T) {
	b := renderKustomize(t, repoRoot(t))
	want := map[string]string{"witness": "StatefulSet", "host-agent": "DaemonSet", "redis": "Deployment"}
	for _, s := range services {
		if _, ok := want[s]; !ok {
			want[s] = "Deployment"
		}
	}
	got := map[string]string{}
	maps.Copy(got, b.kinds)
	for name, kind := range want {
		if got[name] != kind {
			t.Errorf("workload %s is a %q, want a %s", name, got[name], kind)
		}
	}
	if len(got) != len(want) {
		t.Errorf("workloads %v, want exactly %v", got, want)
	}
	for _, s := range services {
		if !b.images["witnz/"+s+":dev"] {
			t.Errorf("no workload runs image witnz/%s:dev", s)
		}
	}
}

// ---- compose ----

func loadCompose(t *testing.T, root string) []invocation {
	t.Helper()
	file := filepath.Join(root, "deploy", "compose", "compose.yaml")
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithEnv([]string{"WITNZ_COMMIT_KEY=" + strings.Repeat("ab", 32)}),
		cli.WithName("witnz"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load deploy/compose/compose.yaml: %v", err)
	}
	var invs []invocation
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		s := p.Services[name]
		if s.Build == nil {
			continue
		}
		if s.Build.Context != root {
			t.Errorf("compose service %s builds from %s, want the repository root", name, s.Build.Context)
		}
		if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
			t.Errorf("compose service %s: dockerfile: %v", name, err)
		}
		arg := s.Build.Args["SERVICE"]
		if arg == nil || !(slices.Contains(services, *arg) || *arg == "witnz") {
			t.Errorf("compose service %s: build arg SERVICE=%v is not a program the Dockerfile builds", name, arg)
			continue
		}
		if s.Image != "witnz/"+*arg+":dev" {
			t.Errorf("compose service %s: image %q, want witnz/%s:dev", name, s.Image, *arg)
		}
		env := map[string]string{}
		for k, v := range s.Environment {
			if v != nil {
				env[k] = *v
			}
		}
		invs = append(invs, invocation{where: "deploy/compose service " + name, service: *arg, args: s.Command, env: env, pki: composePKI})
	}
	for _, want := range append([]string{"postgres", "redis", "pki", "w1", "w2", "w3"}, services...) {
		if want == "witness" {
			continue
		}
		if _, ok := p.Services[want]; !ok {
			t.Errorf("compose has no service %s", want)
		}
	}
	if pg, ok := p.Services["postgres"]; !ok || !slices.Contains(pg.Command, "wal_level=logical") {
		t.Errorf("compose postgres does not run with wal_level=logical")
	}
	return invs
}

func TestCompose(t *testing.T) {
	loadCompose(t, repoRoot(t))
}

// ---- systemd ----

func loadSystemd(t *testing.T, root string) []invocation {
	t.Helper()
	dir := filepath.Join(root, "deploy", "systemd")
	units, err := filepath.Glob(filepath.Join(dir, "witnz-*.service"))
	if err != nil {
		t.Fatal(err)
	}
	var invs []invocation
	seen := map[string]bool{}
	for _, u := range units {
		base := filepath.Base(u)
		svc := strings.TrimSuffix(strings.TrimPrefix(base, "witnz-"), ".service")
		svc = strings.TrimSuffix(svc, "@")
		seen[svc] = true
		if !slices.Contains(services, svc) {
			t.Errorf("%s names no service", base)
			continue
		}
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		// Specifiers as systemd expands them for witnz-witness@w1 on node1.
		text := strings.NewReplacer("%i", "w1", "%H", "node1", "${CREDENTIALS_DIRECTORY}", "/run/credentials/"+base).Replace(string(b))
		text = strings.ReplaceAll(text, "\\\n", " ")
		env := map[string]string{}
		var exec []string
		for line := range strings.Lines(text) {
			key, val, ok := strings.Cut(strings.TrimSpace(line), "=")
			if !ok {
				continue
			}
			switch key {
			case "EnvironmentFile":
				file := filepath.Join(dir, "env", filepath.Base(strings.TrimPrefix(val, "-")))
				for k, v := range readEnvFile(t, file) {
					env[k] = v
				}
			case "ExecStart":
				exec = strings.Fields(val)
			}
		}
		if len(exec) == 0 || exec[0] != "/usr/local/bin/witnz-"+svc {
			t.Errorf("%s: ExecStart %v, want /usr/local/bin/witnz-%s", base, exec, svc)
			continue
		}
		invs = append(invs, invocation{where: "deploy/systemd/" + base, service: svc, args: exec[1:], env: env, pki: systemdPKI})
	}
	for _, s := range services {
		if !seen[s] {
			t.Errorf("deploy/systemd has no unit for %s", s)
		}
	}
	return invs
}

func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Errorf("EnvironmentFile: %v (ship an example in deploy/systemd/env)", err)
		return nil
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s: line %q is not NAME=value", path, line)
			continue
		}
		env[k] = v
	}
	return env
}

func TestSystemdUnits(t *testing.T) {
	loadSystemd(t, repoRoot(t))
}

// ---- Tiltfile ----

func TestTiltfile(t *testing.T) {
	root := repoRoot(t)
	base := renderKustomize(t, root)
	exists := func(what, p string) {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("Tiltfile %s names %s, which does not exist", what, p)
		}
	}
	strs := func(v starlark.Value) []string {
		var out []string
		if l, ok := v.(*starlark.List); ok {
			for i := range l.Len() {
				if s, ok := starlark.AsString(l.Index(i)); ok {
					out = append(out, s)
				}
			}
		}
		return out
	}
	images := map[string]bool{}
	var kustomized, resources []string
	builtin := func(name string, fn func(args starlark.Tuple, kw map[string]starlark.Value) (starlark.Value, error)) *starlark.Builtin {
		return starlark.NewBuiltin(name, func(_ *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
			kw := map[string]starlark.Value{}
			for _, p := range kwargs {
				kw[string(p[0].(starlark.String))] = p[1]
			}
			return fn(args, kw)
		})
	}
	predeclared := starlark.StringDict{
		"local_resource": builtin("local_resource", func(args starlark.Tuple, kw map[string]starlark.Value) (starlark.Value, error) {
			for _, d := range strs(kw["deps"]) {
				exists("local_resource deps", d)
			}
			cmd, _ := starlark.AsString(kw["cmd"])
			for _, f := range strings.Fields(cmd) {
				if strings.HasPrefix(f, "./") {
					exists("local_resource cmd", f)
				}
			}
			return starlark.None, nil
		}),
		"docker_build": builtin("docker_build", func(args starlark.Tuple, kw map[string]starlark.Value) (starlark.Value, error) {
			ref, _ := starlark.AsString(args[0])
			images[ref] = true
			ctx, _ := starlark.AsString(kw["context"])
			df, _ := starlark.AsString(kw["dockerfile"])
			exists("docker_build context", ctx)
			exists("docker_build dockerfile", df)
			if ba, ok := kw["build_args"].(*starlark.Dict); ok {
				v, _, _ := ba.Get(starlark.String("SERVICE"))
				if s, _ := starlark.AsString(v); "witnz/"+s != ref || !slices.Contains(services, s) {
					t.Errorf("docker_build %s passes SERVICE=%v", ref, v)
				}
			} else {
				t.Errorf("docker_build %s passes no SERVICE build arg", ref)
			}
			return starlark.None, nil
		}),
		"kustomize": builtin("kustomize", func(args starlark.Tuple, _ map[string]starlark.Value) (starlark.Value, error) {
			p, _ := starlark.AsString(args[0])
			exists("kustomize", p)
			kustomized = append(kustomized, p)
			return starlark.String("<yaml of " + p + ">"), nil
		}),
		"k8s_yaml": builtin("k8s_yaml", func(starlark.Tuple, map[string]starlark.Value) (starlark.Value, error) {
			return starlark.None, nil
		}),
		"k8s_resource": builtin("k8s_resource", func(args starlark.Tuple, _ map[string]starlark.Value) (starlark.Value, error) {
			n, _ := starlark.AsString(args[0])
			resources = append(resources, n)
			if _, ok := base.workloads[n]; !ok {
				t.Errorf("k8s_resource %q names no workload of deploy/k8s", n)
			}
			return starlark.None, nil
		}),
	}
	src, err := os.ReadFile(filepath.Join(root, "Tiltfile"))
	if err != nil {
		t.Fatal(err)
	}
	// Tilt's dialect: top-level for loops and reassignment are allowed.
	opts := &syntax.FileOptions{TopLevelControl: true, GlobalReassign: true, Set: true, While: true, Recursion: true}
	if _, err := starlark.ExecFileOptions(opts, &starlark.Thread{Name: "Tiltfile"}, "Tiltfile", src, predeclared); err != nil {
		t.Fatalf("Tiltfile: %v", err)
	}
	if !slices.Equal(kustomized, []string{"deploy/k8s"}) {
		t.Errorf("Tiltfile kustomizes %v, want deploy/k8s", kustomized)
	}
	for img := range base.images {
		name, _, _ := strings.Cut(img, ":")
		if strings.HasPrefix(name, "witnz/") && !images[name] {
			t.Errorf("deploy/k8s runs %s, which the Tiltfile does not docker_build", img)
		}
	}
	for _, s := range services {
		if !images["witnz/"+s] {
			t.Errorf("the Tiltfile does not docker_build witnz/%s", s)
		}
	}
	for name := range base.workloads {
		if !slices.Contains(resources, name) {
			t.Errorf("the Tiltfile has no k8s_resource for workload %s", name)
		}
	}
}

// ---- flags ----

// TestProgramsAcceptDeployFlags starts every program with the arguments and
// environment each artifact gives it. The certificates they name do not
// exist here, so a program whose flags and settings are all accepted stops
// at reading a file; any other error (an unknown flag, a malformed value)
// is a broken artifact.
func TestProgramsAcceptDeployFlags(t *testing.T) {
	root := repoRoot(t)
	var invs []invocation
	invs = append(invs, renderKustomize(t, root).invocations...)
	invs = append(invs, loadCompose(t, root)...)
	invs = append(invs, loadSystemd(t, root)...)
	if t.Failed() {
		return
	}

	bin := t.TempDir()
	pkgs := []string{"./tools/witnz/cmd/witnz"}
	for _, s := range services {
		pkgs = append(pkgs, "./services/"+s+"/cmd/"+s)
	}
	build := exec.Command("go", append([]string{"build", "-o", bin + "/"}, pkgs...)...)
	build.Dir = root
	// This module runs with GOWORK=off; the programs build in the workspace.
	build.Env = append(os.Environ(), "GOWORK="+filepath.Join(root, "go.work"))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", pkgs, err, out)
	}

	// Every certificate and key an artifact names must be a file that
	// `witnz pki init` creates for that artifact's identities.
	pkiFiles := map[pkiLayout]map[string]bool{}
	for _, l := range []pkiLayout{composePKI, k8sPKI, systemdPKI} {
		dir := t.TempDir()
		if out, err := runProgram(filepath.Join(bin, "witnz"), []string{"pki", "init", "--dir=" + dir, "--witnesses=" + l.witnesses, "--hostname=" + l.hostname}, nil); err != nil {
			t.Fatalf("witnz pki init: %v\n%s", err, out)
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		pkiFiles[l] = map[string]bool{}
		for _, e := range entries {
			pkiFiles[l][e.Name()] = true
		}
	}
	pkiPathRE := regexp.MustCompile(`/etc/witnz/pki/[^\s,;]+`)
	for _, inv := range invs {
		values := slices.Clone(inv.args)
		for _, v := range inv.env {
			values = append(values, v)
		}
		for _, v := range values {
			for _, p := range pkiPathRE.FindAllString(v, -1) {
				if !pkiFiles[inv.pki][filepath.Base(p)] {
					t.Errorf("%s names %s, which `witnz pki init --witnesses %s --hostname %s` does not create", inv.where, p, inv.pki.witnesses, inv.pki.hostname)
				}
			}
		}
	}

	var wg sync.WaitGroup
	for _, inv := range invs {
		wg.Go(func() {
			prog := inv.service
			if inv.service == "witnz" {
				// The compose pki service really creates a PKI: point it at
				// a scratch directory and expect success.
				dir := t.TempDir()
				args := slices.Clone(inv.args)
				for i, a := range args {
					if strings.HasPrefix(a, "--dir=") {
						args[i] = "--dir=" + dir
					}
				}
				out, err := runProgram(filepath.Join(bin, prog), args, inv.env)
				if err != nil {
					t.Errorf("%s: witnz %v: %v\n%s", inv.where, args, err, out)
				}
				for _, f := range []string{"ca.crt", "witness-w1.crt", "service-cdc-ingest.crt", "agent-agent1.crt", "operator-admin.crt"} {
					if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
						t.Errorf("%s: pki init did not create %s", inv.where, f)
					}
				}
				return
			}
			out, err := runProgram(filepath.Join(bin, prog), inv.args, inv.env)
			if err == nil {
				t.Errorf("%s: %s started although its certificates do not exist", inv.where, prog)
				return
			}
			if !strings.Contains(out, "no such file or directory") {
				t.Errorf("%s: %s %q refused its configuration:\n%s", inv.where, prog, inv.args, out)
			}
		})
	}
	wg.Wait()
}

func runProgram(path string, args []string, env map[string]string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + os.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return out.String(), fmt.Errorf("still running after 30 s")
	}
	return out.String(), err
}
