/* SPDX-License-Identifier: BSD-3-Clause */
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
 *
 * CONFINE-PARENTS.  A hostile child's locators can name any path on the
 * host.  With confine_parents, a candidate is only opened if it lies
 * inside one of the allowed places (struct vhd_confine): the real
 * directory of the chain's top file (realpath of the top, so a symlink
 * to the top does not widen anything), the parent_dirs, all with their
 * subdirectories, and exactly the parent_files.  Two checks, both
 * before the candidate is opened:
 *
 *  1. as written: the candidate made absolute, "." and ".." removed
 *     without looking at the file system, must be inside an allowed
 *     place, in its real or its given spelling.  Paths that fail this
 *     are never touched at all (no stat, no directory listing), so an
 *     error cannot even tell whether they exist;
 *  2. really: its realpath(3) must be inside an allowed place in the
 *     real spelling.  This catches symlinks (and ".." after a symlink)
 *     leading out.
 *
 * A refused candidate is skipped like a missing one: the search goes on
 * and only fails if nothing acceptable is found, and then the error
 * lists the refused candidates with the locator each came from.  Nothing
 * of a refused file is ever read, so no message can show its id or
 * content.
 */
#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

struct candidate {
  char *path;
  char *from;                   /* where it came from, for messages */
};

struct candidates {
  struct candidate *v;
  size_t n, cap;
};

/* Takes both strings; a path already listed keeps its first origin. */
static void
add_candidate (struct candidates *c, char *path, char *from)
{
  size_t i;

  if (path == NULL || from == NULL)
    goto drop;
  for (i = 0; i < c->n; i++)
    if (strcmp (c->v[i].path, path) == 0)
      goto drop;
  if (ARRAY_RESERVE (c->v, c->cap, c->n + 1) == -1)
    goto drop;
  c->v[c->n].path = path;
  c->v[c->n++].from = from;
  return;

 drop:
  free (path);
  free (from);
}

static void
free_candidates (struct candidates *c)
{
  size_t i;
  for (i = 0; i < c->n; i++) {
    free (c->v[i].path);
    free (c->v[i].from);
  }
  free (c->v);
}

/* malloc'd printf, NULL when out of memory. */
static char *
fmt (const char *fs, ...) __attribute__ ((format (printf, 1, 2)));
static char *
fmt (const char *fs, ...)
{
  va_list args;
  char *r;
  int n;

  va_start (args, fs);
  n = vasprintf (&r, fs, args);
  va_end (args);
  return n == -1 ? NULL : r;
}

/* Append item to the comma-separated list in buf if it fits whole. */
static void
list_add (char *buf, size_t size, const char *item)
{
  size_t len = strlen (buf);

  if (len + strlen (item) + 3 < size)
    snprintf (buf + len, size - len, "%s%s", len ? ", " : "", item);
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
 * drive letter is dropped (also from an extended-length "\\?\C:\..."
 * path, the form MS-VHDX specifies), a leading ".\" is removed.  UNC
 * and volume GUID paths cannot be mapped and give NULL. */
static char *
windows_to_posix (const char *win)
{
  char *s, *p;

  if (strncmp (win, "\\\\?\\", 4) == 0 && win[4] && win[5] == ':')
    win += 4;
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
  vhd_quirk_met (path, NULL, VHD_QUIRK_PATH_CASE, "found as %s", out);
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
 * directory) to the candidates; from says where it was found. */
static void
add_path_and_name (struct candidates *c, struct candidates *names,
                   const char *child_dir, char *posix, char *from)
{
  if (posix == NULL || from == NULL) {
    free (posix);
    free (from);
    return;
  }
  add_candidate (c, join (child_dir, posix), strdup (from));
  add_candidate (names, strdup (base_name (posix)), from);
  free (posix);
}

/* The child's hints (layer_ops.parent_hints), as paths. */
struct hints {
  struct candidates *located, *names;
  const char *child_dir;
};

static void
add_hint (void *opaque, const char *text, enum hint_syntax syntax, char *from)
{
  struct hints *h = opaque;

  add_path_and_name (h->located, h->names, h->child_dir,
                     syntax == HINT_MAC_URL ? macx_to_posix (text)
                                            : windows_to_posix (text),
                     from);
}

static void
collect_candidates (struct vhd_layer *child,
                    const struct vhd_open_options *opts,
                    const char *child_dir, struct candidates *c)
{
  struct candidates names = { NULL, 0, 0 }, located = { NULL, 0, 0 };
  struct hints h = { &located, &names, child_dir };
  size_t i, k;

  for (i = 0; i < opts->n_parent_files; i++)
    add_candidate (c, realpath (opts->parent_files[i], NULL),
                   fmt ("parent file %s named by the user",
                        opts->parent_files[i]));
  child->ops->parent_hints (child, add_hint, &h);

  /* User-named directories take precedence over the locators: they are
   * how the user says where the parents really are on this host. */
  for (i = 0; i < opts->n_parent_dirs; i++)
    for (k = 0; k < names.n; k++)
      add_candidate (c, join (opts->parent_dirs[i], names.v[k].path),
                     fmt ("file name in %s, looked up in parent-dir %s",
                          names.v[k].from, opts->parent_dirs[i]));
  for (k = 0; k < located.n; k++) {
    add_candidate (c, located.v[k].path, located.v[k].from);
    located.v[k].path = located.v[k].from = NULL;
  }
  for (k = 0; k < names.n; k++)
    add_candidate (c, join (child_dir, names.v[k].path),
                   fmt ("file name in %s, looked up in the child's "
                        "directory",
                        names.v[k].from));

  free_candidates (&located);
  free_candidates (&names);
}

/* ------------------------------------------------------------ confine */

struct place {
  char *path;
  bool dir;                     /* a directory (else exactly this file) */
  bool real;                    /* realpath(3) spelling */
};

struct vhd_confine {
  struct place *v;
  size_t n, cap;
};

/* path made absolute (against the working directory) with ".", ".."
 * and repeated slashes removed, without looking at the file system. */
static char *
lexical_path (const char *path)
{
  char *abs = NULL, *out, *comp, *save = NULL;
  size_t n = 0, len;

  if (path[0] == '/')
    abs = strdup (path);
  else {
    char *cwd = getcwd (NULL, 0);
    if (cwd)
      abs = fmt ("%s/%s", cwd, path);
    free (cwd);
  }
  if (abs == NULL)
    return NULL;
  out = malloc (strlen (abs) + 2);
  if (out == NULL) {
    free (abs);
    return NULL;
  }
  for (comp = strtok_r (abs, "/", &save); comp;
       comp = strtok_r (NULL, "/", &save)) {
    if (strcmp (comp, ".") == 0)
      continue;
    if (strcmp (comp, "..") == 0) {
      while (n > 0 && out[n - 1] != '/')
        n--;
      if (n > 0)
        n--;
      continue;
    }
    len = strlen (comp);
    out[n++] = '/';
    memcpy (out + n, comp, len);
    n += len;
  }
  if (n == 0)
    out[n++] = '/';
  out[n] = '\0';
  free (abs);
  return out;
}

/* Is path strictly inside directory dir (both absolute, normalized)?
 * A prefix must end at a path component: /srv/a holds /srv/a/x and
 * /srv/a/b/x, not /srv/ab/x. */
static bool
is_inside (const char *dir, const char *path)
{
  size_t len = strlen (dir);

  if (strcmp (dir, "/") == 0)
    return path[0] == '/' && path[1] != '\0';
  return strncmp (path, dir, len) == 0 && path[len] == '/';
}

/* Takes path; NULL (a directory or file that does not exist) is
 * skipped.  -1 when out of memory. */
static int
add_place (struct vhd_confine *cf, char *path, bool dir, bool real)
{
  if (path == NULL)
    return 0;
  if (ARRAY_RESERVE (cf->v, cf->cap, cf->n + 1) == -1) {
    free (path);
    return -1;
  }
  cf->v[cf->n++] = (struct place) { path, dir, real };
  return 0;
}

struct vhd_confine *
vhd_confine_new (const struct vhd_open_options *opts, const char *top_dir,
                 const char *top_dir_given)
{
  struct vhd_confine *cf = calloc (1, sizeof *cf);
  char *top = strdup (top_dir);
  size_t i;
  int r = 0;

  if (cf == NULL || top == NULL) {
    free (top);
    goto nomem;
  }
  r |= add_place (cf, top, true, true);
  if (top_dir_given)
    r |= add_place (cf, lexical_path (top_dir_given), true, false);
  for (i = 0; i < opts->n_parent_dirs; i++) {
    r |= add_place (cf, realpath (opts->parent_dirs[i], NULL), true, true);
    r |= add_place (cf, lexical_path (opts->parent_dirs[i]), true, false);
  }
  for (i = 0; i < opts->n_parent_files; i++) {
    r |= add_place (cf, realpath (opts->parent_files[i], NULL), false, true);
    r |= add_place (cf, lexical_path (opts->parent_files[i]), false, false);
  }
  if (r == 0)
    return cf;

 nomem:
  vhd_error ("%s: %m", top_dir);
  vhd_confine_free (cf);
  return NULL;
}

void
vhd_confine_free (struct vhd_confine *cf)
{
  size_t i;

  if (cf == NULL)
    return;
  for (i = 0; i < cf->n; i++)
    free (cf->v[i].path);
  free (cf->v);
  free (cf);
}

/* Is path (absolute, normalized) in an allowed place?  real_only: the
 * realpath(3) spellings only. */
static bool
allowed (const struct vhd_confine *cf, const char *path, bool real_only)
{
  size_t i;

  for (i = 0; i < cf->n; i++) {
    const struct place *p = &cf->v[i];
    if (real_only && !p->real)
      continue;
    if (p->dir ? is_inside (p->path, path) : strcmp (p->path, path) == 0)
      return true;
  }
  return false;
}

/* Where a candidate is.  NULL if it does not exist, or (with *refusal
 * set) if confine-parents refuses it, which is decided without opening
 * it and, when its path as written is outside, without touching it. */
static char *
locate (const struct vhd_confine *cf, const char *candidate,
        const char **refusal)
{
  char *path, *real;

  *refusal = NULL;
  if (cf) {
    char *lex = lexical_path (candidate);
    bool ok = lex && allowed (cf, lex, false);

    free (lex);
    if (!ok) {
      *refusal = "outside the allowed directories";
      return NULL;
    }
  }
  path = resolve_case_insensitive (candidate);
  if (path == NULL || cf == NULL)
    return path;
  real = realpath (path, NULL);
  free (path);
  if (real && !allowed (cf, real, true)) {
    *refusal = "its real path is outside the allowed directories";
    free (real);
    return NULL;
  }
  return real;
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

/* The quirks tolerated in finding child's parent p through a candidate
 * that came from from (see collect_candidates). */
static void
note_parent_quirks (const struct vhd_layer *child, const char *from,
                    const struct vhd_layer *p)
{
  if (strstr (from, "parent name field") && child->parent_name &&
      strpbrk (child->parent_name, "\\/:"))
    vhd_quirk_met (child->path, NULL, VHD_QUIRK_PARENT_NAME_PATH,
                   "parent name \"%s\"", child->parent_name);
  if (strstr (from, ", W2") || strstr (from, ", Wi2") ||
      strstr (from, "parent name field"))
    vhd_quirk_met (child->path, NULL, VHD_QUIRK_WINDOWS_PATH,
                   "parent %s found through %s", p->path, from);
  vhd_quirk_met (child->path, NULL, VHD_QUIRK_PARENT_TIMESTAMP,
                 "parent timestamp not compared");
}

/* Check mode: reopen the chosen parent, reporting its problems. */
static int
reopen_reporting (struct vhd_layer **p, const struct vhd_open_options *opts)
{
  char *path = strdup ((*p)->path);
  int r;

  vhd_layer_close (*p);
  *p = NULL;
  if (path == NULL)
    return -1;
  r = vhd_layer_open (path, false, opts, p);
  free (path);
  return r;
}

int
vhd_find_parent (struct vhd_layer *child,
                 const struct vhd_open_options *opts,
                 const struct vhd_confine *cf,
                 struct vhd_layer **parent)
{
  struct candidates c = { NULL, 0, 0 };
  struct vhd_layer *mismatch = NULL;
  char *dir_copy = strdup (child->path);
  char tried[2048] = "", refused[1024] = "", refused_note[1100] = "";
  char other_format[1024] = "";
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
    const char *refusal;
    char *path = locate (cf, c.v[i].path, &refusal);
    struct vhd_layer *p;

    if (refusal) {
      char *item = fmt ("%s (from %s)", c.v[i].path, c.v[i].from);

      vhd_debug ("%s: confine-parents: parent candidate %s refused: %s",
                 child->path, item ? item : c.v[i].path, refusal);
      if (item)
        list_add (refused, sizeof refused, item);
      free (item);
      continue;
    }
    list_add (tried, sizeof tried, c.v[i].path);
    if (path == NULL)
      continue;
    why[0] = '\0';
    if (vhd_layer_open (path, false, &quiet, &p) == -1) {
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
    /* Hyper-V never mixes formats in a chain: a VHDX child's locators
     * name VHDX files, a VHD child's VHD files. */
    if (p->ops != child->ops) {
      if (other_format[0] == '\0')
        snprintf (other_format, sizeof other_format,
                  "; %s is a %s file but the child is %s (a chain never "
                  "mixes formats)", p->path, p->ops->format,
                  child->ops->format);
      vhd_layer_close (p);
      continue;
    }
    if (memcmp (p->id, child->parent_id, 16) == 0 ||
        (child->has_parent_id2 &&
         memcmp (p->id, child->parent_id2, 16) == 0)) {
      if (memcmp (p->id, child->parent_id, 16) != 0)
        vhd_warning ("%s: its parent %s matches the second linkage "
                     "(parent_linkage2), as in the middle of a merge",
                     child->path, p->path);
      /* The quirk table is VHD's (lib/vhd/quirks.c). */
      if (child->ops == &vhd_format_ops)
        note_parent_quirks (child, c.v[i].from, p);
      if (opts->problem && reopen_reporting (&p, opts) == -1)
        goto out;
      *parent = p;
      ret = 0;
      goto out;
    }
    if (mismatch == NULL)
      mismatch = p;
    else
      vhd_layer_close (p);
  }

  /* Whatever the failure, say what confine-parents kept out: the parent
   * may well be one of those. */
  if (refused[0])
    snprintf (refused_note, sizeof refused_note,
              "; refused by confine-parents (outside the allowed "
              "directories): %s", refused);

  vhd_layer_format_id (child, child->parent_id, want);
  if (mismatch && opts->problem) {
    /* Check mode: report, then examine the rest of the chain through
     * the file that is there. */
    vhd_layer_format_id (mismatch, mismatch->id, got);
    vhd_report (opts, VHD_ERROR, child->path, "parent",
                "", "parent id mismatch: the child expects parent id %s, "
                "but %s has id %s%s", want, mismatch->path, got,
                refused_note);
    if (reopen_reporting (&mismatch, opts) == 0) {
      *parent = mismatch;
      mismatch = NULL;
      ret = 0;
    }
    goto out;
  }
  if (mismatch) {
    vhd_layer_format_id (mismatch, mismatch->id, got);
    if (opts->ignore_id_mismatch) {
      vhd_warning ("%s: parent id mismatch ignored: child expects parent "
                   "id %s, %s has id %s%s", child->path, want,
                   mismatch->path, got, refused_note);
      *parent = mismatch;
      mismatch = NULL;
      ret = 0;
      goto out;
    }
    vhd_error ("%s: parent id mismatch: the child expects parent id %s, "
               "but %s has id %s (use the ignore-id-mismatch option to "
               "open it anyway)%s", child->path, want, mismatch->path, got,
               refused_note);
    errno = EINVAL;
  }
  else {
    /* The refused candidates go first: the message has a size limit,
     * and the list of what was tried can be long. */
    vhd_report (opts, VHD_ERROR, child->path, "parent",
                opts->missing_parent_hint ? opts->missing_parent_hint :
                "; use the parent or parent-dir option to say where it is",
                "parent not found (parent id %s, name \"%s\")%s%s; tried: %s",
                want, child->parent_name ? child->parent_name : "",
                other_format, refused_note,
                tried[0] ? tried : refused[0] ? "nothing else" :
                "nothing (no locators, no parent name)");
    errno = ENOENT;
  }

 out:
  vhd_layer_close (mismatch);
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

int
vhd_layer_find_parent (struct vhd_layer *child,
                       const struct vhd_open_options *opts,
                       struct vhd_layer **parent)
{
  struct vhd_open_options o = *opts;

  if (!child->has_parent || opts->confine_parents) {
    vhd_error ("%s: %s", child->path, !child->has_parent
               ? "not a differencing disk: it has no parent to look for"
               : "confine-parents is not supported in a one-step search");
    errno = EINVAL;
    return -1;
  }
  o.ignore_id_mismatch = true;
  o.no_parents = true;
  o.readonly = true;
  return vhd_find_parent (child, &o, NULL, parent);
}
