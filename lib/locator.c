/* nbdkit-vhd: finding the parent of a differencing disk.
 *
 * Candidates, in order: files the user named (parent=), the parent's
 * file name in directories the user named (parent-dir=), the W2ru, W2ku,
 * Wi2r, Wi2k and MacX locators, the parent name field (which Windows
 * fills with a full path), and finally the parent's file name in the
 * child's own directory.  Windows paths lose their drive letter and get
 * forward slashes; relative paths are relative to the child's directory;
 * a path that does not exist as written is retried case-insensitively,
 * because the files usually come from a case-insensitive file system.
 *
 * The first candidate whose unique id equals the child's stored parent
 * id wins.  Everything is resolved to absolute paths here, at open time,
 * before nbdkit changes directory to /.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>

#include "internal.h"

struct candidates {
  char **paths;
  size_t n;
};

static void
add_candidate (struct candidates *c, char *path)
{
  size_t i;
  char **p;

  if (path == NULL)
    return;
  for (i = 0; i < c->n; i++)
    if (strcmp (c->paths[i], path) == 0) {
      free (path);
      return;
    }
  p = realloc (c->paths, (c->n + 1) * sizeof *p);
  if (p == NULL) {
    free (path);
    return;
  }
  c->paths = p;
  c->paths[c->n++] = path;
}

static void
free_candidates (struct candidates *c)
{
  size_t i;
  for (i = 0; i < c->n; i++)
    free (c->paths[i]);
  free (c->paths);
}

static char *
join (const char *dir, const char *name)
{
  char *r;
  if (name[0] == '/')
    return strdup (name);
  if (asprintf (&r, "%s/%s", dir, name) == -1)
    return NULL;
  return r;
}

/* Turn a Windows path into a POSIX one: backslashes become slashes, a
 * drive letter is dropped, a leading ".\" is removed.  UNC paths cannot
 * be mapped and give NULL. */
static char *
windows_to_posix (const char *win)
{
  char *s, *p;

  if (strncmp (win, "\\\\", 2) == 0)
    return NULL;
  if (((win[0] >= 'A' && win[0] <= 'Z') || (win[0] >= 'a' && win[0] <= 'z'))
      && win[1] == ':')
    win += 2;
  s = strdup (win);
  if (s == NULL)
    return NULL;
  for (p = s; *p; p++)
    if (*p == '\\')
      *p = '/';
  while (strncmp (s, "./", 2) == 0)
    memmove (s, s + 2, strlen (s + 2) + 1);
  if (s[0] == '\0') {
    free (s);
    return NULL;
  }
  return s;
}

static int
hexval (char c)
{
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* MacX: a file:// URL, with or without "localhost", percent-encoded. */
static char *
macx_to_posix (const char *url)
{
  char *s, *o;
  const char *p;

  if (strncmp (url, "file://", 7) == 0)
    url += 7;
  if (strncmp (url, "localhost/", 10) == 0)
    url += 9;
  s = malloc (strlen (url) + 1);
  if (s == NULL)
    return NULL;
  for (p = url, o = s; *p; p++) {
    if (p[0] == '%' && hexval (p[1]) >= 0 && hexval (p[2]) >= 0) {
      *o++ = hexval (p[1]) * 16 + hexval (p[2]);
      p += 2;
    }
    else
      *o++ = *p;
  }
  *o = '\0';
  return s;
}

/* Find path, matching each missing component case-insensitively. */
static char *
resolve_case_insensitive (const char *path)
{
  struct stat st;
  char *copy, *out, *comp, *save = NULL;
  size_t len;

  if (stat (path, &st) == 0)
    return strdup (path);
  if (path[0] != '/')
    return NULL;
  copy = strdup (path);
  out = malloc (strlen (path) + 2);
  if (copy == NULL || out == NULL)
    goto fail;
  strcpy (out, "");
  for (comp = strtok_r (copy, "/", &save); comp;
       comp = strtok_r (NULL, "/", &save)) {
    len = strlen (out);
    strcat (out, "/");
    strcat (out, comp);
    if (stat (out, &st) == 0)
      continue;
    out[len] = '\0';
    {
      DIR *d = opendir (len ? out : "/");
      struct dirent *e;
      bool found = false;

      if (d == NULL)
        goto fail;
      while ((e = readdir (d)) != NULL)
        if (strcasecmp (e->d_name, comp) == 0) {
          strcat (out, "/");
          strcat (out, e->d_name);
          found = true;
          break;
        }
      closedir (d);
      if (!found)
        goto fail;
    }
  }
  free (copy);
  return out;

 fail:
  free (copy);
  free (out);
  return NULL;
}

static const char *
base_name (const char *path)
{
  const char *slash = strrchr (path, '/');
  return slash ? slash + 1 : path;
}

/* Add a locator-style path and its base name (in every search
 * directory) to the candidates. */
static void
add_path_and_name (struct candidates *c, struct candidates *names,
                   const char *child_dir, char *posix)
{
  if (posix == NULL)
    return;
  add_candidate (c, join (child_dir, posix));
  add_candidate (names, strdup (base_name (posix)));
  free (posix);
}

static void
collect_candidates (const struct vhd_file *child,
                    const struct vhd_open_options *opts,
                    const char *child_dir, struct candidates *c)
{
  static const uint32_t order[] = {
    VHD_LOC_W2RU, VHD_LOC_W2KU, VHD_LOC_WI2R, VHD_LOC_WI2K, VHD_LOC_MACX,
  };
  struct candidates names = { NULL, 0 }, located = { NULL, 0 };
  size_t i, k;
  int slot;

  for (i = 0; i < opts->n_parent_files; i++)
    add_candidate (c, realpath (opts->parent_files[i], NULL));

  for (k = 0; k < sizeof order / sizeof order[0]; k++)
    for (slot = 0; slot < VHD_NUM_LOCATORS; slot++) {
      char *text;
      if (child->header.loc[slot].code != order[k])
        continue;
      text = vhd_locator_text (child, slot);
      if (text == NULL)
        continue;
      add_path_and_name (&located, &names, child_dir,
                         order[k] == VHD_LOC_MACX ? macx_to_posix (text)
                                                  : windows_to_posix (text));
      free (text);
    }
  if (child->parent_name && child->parent_name[0])
    add_path_and_name (&located, &names, child_dir,
                       windows_to_posix (child->parent_name));

  /* User-named directories take precedence over the locators: they are
   * how the user says where the parents really are on this host. */
  for (i = 0; i < opts->n_parent_dirs; i++)
    for (k = 0; k < names.n; k++)
      add_candidate (c, join (opts->parent_dirs[i], names.paths[k]));
  for (k = 0; k < located.n; k++) {
    add_candidate (c, located.paths[k]);
    located.paths[k] = NULL;
  }
  for (k = 0; k < names.n; k++)
    add_candidate (c, join (child_dir, names.paths[k]));

  free_candidates (&located);
  free_candidates (&names);
}

/* Check mode: candidates are opened quietly (only the parent's own
 * problems belong in the report), keeping the first problem in case the
 * candidate cannot be opened at all. */
static void
keep_first_problem (void *opaque, const char *file, const char *structure,
                    const char *what)
{
  char *why = opaque;
  if (why[0] == '\0')
    snprintf (why, 256, "%s", what);
}

/* Check mode: reopen the chosen parent, reporting its problems. */
static int
reopen_reporting (struct vhd_file **p, const struct vhd_open_options *opts)
{
  char *path = strdup ((*p)->path);
  int r;

  vhd_file_close (*p);
  *p = NULL;
  if (path == NULL)
    return -1;
  r = vhd_file_open (path, false, opts, p);
  free (path);
  return r;
}

int
vhd_find_parent (const struct vhd_file *child,
                 const struct vhd_open_options *opts,
                 struct vhd_file **parent)
{
  struct candidates c = { NULL, 0 };
  struct vhd_file *mismatch = NULL;
  char *dir_copy = strdup (child->path);
  char tried[2048] = "";
  char want[37], got[37], why[256];
  struct vhd_open_options quiet = *opts;
  size_t i;
  int ret = -1;

  if (opts->problem) {
    quiet.problem = keep_first_problem;
    quiet.problem_opaque = why;
  }

  if (dir_copy == NULL) {
    vhd_error ("%s: %m", child->path);
    return -1;
  }
  collect_candidates (child, opts, dirname (dir_copy), &c);

  for (i = 0; i < c.n; i++) {
    char *path = resolve_case_insensitive (c.paths[i]);
    struct vhd_file *p;

    if (strlen (tried) + strlen (c.paths[i]) + 4 < sizeof tried)
      snprintf (tried + strlen (tried), sizeof tried - strlen (tried),
                "%s%s", tried[0] ? ", " : "", c.paths[i]);
    if (path == NULL)
      continue;
    why[0] = '\0';
    if (vhd_file_open (path, false, &quiet, &p) == -1) {
      /* The file is where the parent should be but is unusable: say so
       * rather than hide the reason behind "not found". */
      if (opts->problem)
        vhd_report (opts, VHD_ERROR, child->path, "parent", "",
                    "its parent candidate %s cannot be opened: %s", path,
                    why);
      else
        vhd_error ("%s: its parent candidate %s cannot be opened",
                   child->path, path);
      free (path);
      goto out;
    }
    free (path);
    if (memcmp (p->footer.unique_id, child->header.parent_id, 16) == 0) {
      if (opts->problem && reopen_reporting (&p, opts) == -1)
        goto out;
      *parent = p;
      ret = 0;
      goto out;
    }
    if (mismatch == NULL)
      mismatch = p;
    else
      vhd_file_close (p);
  }

  vhd_uuid_format (child->header.parent_id, want);
  if (mismatch && opts->problem) {
    /* Check mode: report, then examine the rest of the chain through
     * the file that is there. */
    vhd_uuid_format (mismatch->footer.unique_id, got);
    vhd_report (opts, VHD_ERROR, child->path, "parent",
                "", "parent id mismatch: the child expects parent id %s, "
                "but %s has id %s", want, mismatch->path, got);
    if (reopen_reporting (&mismatch, opts) == 0) {
      *parent = mismatch;
      mismatch = NULL;
      ret = 0;
    }
    goto out;
  }
  if (mismatch) {
    vhd_uuid_format (mismatch->footer.unique_id, got);
    if (opts->ignore_id_mismatch) {
      vhd_warning ("%s: parent id mismatch ignored: child expects parent "
                   "id %s, %s has id %s", child->path, want, mismatch->path,
                   got);
      *parent = mismatch;
      mismatch = NULL;
      ret = 0;
      goto out;
    }
    vhd_error ("%s: parent id mismatch: the child expects parent id %s, "
               "but %s has id %s (use the ignore-id-mismatch option to "
               "open it anyway)", child->path, want, mismatch->path, got);
    errno = EINVAL;
  }
  else {
    vhd_report (opts, VHD_ERROR, child->path, "parent",
                opts->missing_parent_hint ? opts->missing_parent_hint :
                "; use the parent or parent-dir option to say where it is",
                "parent not found (parent id %s, name \"%s\"); tried: %s",
                want, child->parent_name ? child->parent_name : "",
                tried[0] ? tried : "nothing (no locators, no parent name)");
    errno = ENOENT;
  }

 out:
  vhd_file_close (mismatch);
  free_candidates (&c);
  free (dir_copy);
  return ret;
}

char *
vhd_relative_path (const char *dir, const char *target)
{
  size_t common = 0, i;
  size_t ups = 0;
  const char *rest;
  char *out;

  /* Longest common prefix ending at a directory boundary. */
  for (i = 0; dir[i] && dir[i] == target[i]; i++)
    if (dir[i] == '/')
      common = i;
  if (dir[i] == '\0' && target[i] == '/')
    common = i;
  rest = target + common + 1;
  for (i = common; dir[i]; i++)
    if (dir[i] == '/' && dir[i + 1] != '\0')
      ups++;
  out = malloc (ups * 3 + strlen (rest) + 3);
  if (out == NULL)
    return NULL;
  strcpy (out, "");
  for (i = 0; i < ups; i++)
    strcat (out, "../");
  strcat (out, rest);
  return out;
}
