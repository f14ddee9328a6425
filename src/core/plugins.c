/*
 * plugins.c - loads plugin modules (shared objects) from modules.dir.
 *
 * A plugin is opened with RTLD_NOW, so a plugin calling a function this
 * actiond does not have is refused at once instead of failing at its first
 * call, and RTLD_LOCAL, so plugins cannot see (or clash on) each other's
 * symbols; their own calls into the module API resolve against the actiond
 * executable, which exports its symbols for that.  The API version the
 * plugin was built for is read from its module constant before any of its
 * functions runs.  The module registry (module.h) does the rest, all or
 * nothing, and runs the plugins' fini() at shutdown with the other modules'
 * (ad_modules_fini); only then are the files unloaded.
 */
#include "plugins.h"
#include "log.h"
#include "module.h"

#include "actiond/module.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct plugin {
	void *handle;
	const struct ad_module_info *info;
};

static struct plugin loaded[AD_PLUGINS_MAX];
static size_t nloaded;

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* True for "x.so": a visible name ending in ".so". */
static bool is_plugin_name(const char *name)
{
	size_t n = strlen(name);

	return name[0] != '.' && n > 3 && !strcmp(name + n - 3, ".so");
}

/*
 * Copies s into out (outlen > 0) for a log line: at most outlen - 1 bytes,
 * anything but printable ASCII replaced by '?', so a plugin's strings can
 * neither break the line nor forge another.
 */
static void printable(char *out, size_t outlen, const char *s)
{
	size_t i = 0;

	for (; s && s[i] && i + 1 < outlen; i++)
		out[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	out[i] = '\0';
}

/*
 * Reads the names of the candidate files of dir, sorted.  Returns the
 * count and sets *ret (an array of strings the caller frees), or -1 when
 * the directory cannot be read (logged).
 */
static int list_dir(const char *dir, char ***ret)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL, **grown;
	size_t n = 0, cap = 0;

	if (!d) {
		ad_log_error("modules.dir %s: %s", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d))) {
		if (!is_plugin_name(e->d_name))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			if (!(grown = realloc(names, cap * sizeof(*names))))
				goto oom;
			names = grown;
		}
		if (!(names[n] = strdup(e->d_name)))
			goto oom;
		n++;
		if (n > INT_MAX / 2)
			break;
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), cmp_names);
	*ret = names;
	return (int)n;
oom:
	closedir(d);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	ad_log_error("modules.dir %s: out of memory", dir);
	return -1;
}

/*
 * Loads one plugin file.  Returns 0 when it loaded, or -1 when it was
 * refused; each refusal is logged as exactly one error line.
 */
static int load_one(const char *path)
{
	const struct ad_module_info *info;
	char err[512], name[40], version[40];
	struct stat st;
	void *h;

	if (stat(path, &st) || !S_ISREG(st.st_mode)) {
		ad_log_error("plugin %s refused: not a regular file", path);
		return -1;
	}
	if (nloaded == AD_PLUGINS_MAX) {
		ad_log_error("plugin %s refused: more than %d plugins", path,
			     AD_PLUGINS_MAX);
		return -1;
	}
	dlerror();
	if (!(h = dlopen(path, RTLD_NOW | RTLD_LOCAL))) {
		const char *why = dlerror();

		ad_log_error("plugin %s refused: cannot load it: %s", path,
			     why ? why : "unknown error");
		return -1;
	}
	info = dlsym(h, AD_MODULE_SYMBOL);
	if (!info) {
		ad_log_error("plugin %s refused: it exports no symbol %s "
			     "(declare the module with AD_MODULE_EXPORT)",
			     path, AD_MODULE_SYMBOL);
		goto refused;
	}
	/* Only data is read until the version is known to match. */
	if (info->api_version != AD_MODULE_API_VERSION) {
		ad_log_error("plugin %s refused: built for module API %u, "
			     "this actiond serves %d",
			     path, (unsigned)info->api_version, AD_MODULE_API_VERSION);
		goto refused;
	}
	err[0] = '\0';
	if (ad_module_load(info, path, err, sizeof(err))) {
		ad_log_error("plugin %s refused: %s", path,
			     err[0] ? err : "the module registry refused it");
		goto refused;
	}
	loaded[nloaded].handle = h;
	loaded[nloaded].info = info;
	nloaded++;
	printable(name, sizeof(name), info->name);
	printable(version, sizeof(version), info->version);
	ad_log_info("plugin %s loaded: module %s version %s", path, name, version);
	return 0;
refused:
	dlclose(h);
	return -1;
}

int ad_plugins_load(const char *dir)
{
	char **names = NULL;
	char path[PATH_MAX];
	int n, ok = 0;

	if (!dir)
		return 0;
	if ((n = list_dir(dir, &names)) < 0)
		return -1;
	for (int i = 0; i < n; i++) {
		size_t dl = strlen(dir);
		const char *sep = dl && dir[dl - 1] == '/' ? "" : "/";

		if ((size_t)snprintf(path, sizeof(path), "%s%s%s", dir, sep, names[i]) >=
		    sizeof(path))
			ad_log_error("plugin %s%s%s refused: the path is too long", dir,
				     sep, names[i]);
		else if (!load_one(path))
			ok++;
		free(names[i]);
	}
	free(names);
	if (n)
		ad_log_info("%d of %d plugins loaded from %s", ok, n, dir);
	return ok;
}

void ad_plugins_unload(void)
{
	while (nloaded) {
		struct plugin *p = &loaded[--nloaded];

		dlclose(p->handle);
		p->handle = NULL;
		p->info = NULL;
	}
}
