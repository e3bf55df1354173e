"""Reading the CLI's data files: ``.npy`` arrays, and CSV/TSV text read with pandas.

CSV files: the delimiter is sniffed (``,``, ``;``, tab, ``|``) unless given; the encoding is
UTF-8 (a byte-order mark is fine) unless given; pandas' NA markers (empty cell, ``NA``, ``nan``,
``null``, ...) and ``--na-values`` mark missing values.  Whether the first line is a header is
detected, and an ambiguous first line is refused rather than guessed: a line of numbers is data;
a line of distinct text cells is a header; a line that mixes them is data unless one of its text
cells sits in a column of numbers (a header with numeric names, or a data row with a typo?), and
then ``--header`` or ``--no-header`` must say which.  Whatever cannot be read is one line naming
the file, the column and the line.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CommandError
from .files import input_file

__all__ = ["Table", "read_table", "read_matrix", "is_number", "decimal_comma_hint", "standardize", "SNIFF_DELIMITERS"]

SNIFF_DELIMITERS = ",;\t|"
_SAMPLE_BYTES = 1 << 16


def is_number(text, decimal: str = ".") -> bool:
    try:
        float(text if decimal == "." else str(text).replace(decimal, "."))
    except (TypeError, ValueError):
        return False
    return True


_DECIMAL_COMMA = re.compile(r"\s*[+-]?[0-9]*,[0-9]+(?:[eE][+-]?[0-9]+)?\s*")


def decimal_comma_hint(value) -> str:
    """A hint for a cell such as '1,5' (a decimal comma read as text)."""
    return "; numbers with a decimal comma? pass --decimal ," if _DECIMAL_COMMA.fullmatch(str(value)) else ""


@dataclass
class Table:
    """A data file as named columns: a pandas DataFrame (CSV) or a NumPy array (.npy)."""

    path: Path
    names: list[str]  # header names; "0", "1", ... without a header
    has_header: bool
    frame: object = None  # pandas.DataFrame for CSV files
    array: np.ndarray | None = None  # .npy files (possibly a read-only memory map)
    encoding: str = "utf-8-sig"
    delimiter: str = ","
    na_values: tuple = ()
    _skip: int = 0  # lines before the first (header or data) line
    _lines: np.ndarray | None = field(default=None, repr=False)

    @property
    def unit(self) -> str:
        return "row" if self.array is not None else "line"

    @property
    def n_rows(self) -> int:
        return self.array.shape[0] if self.array is not None else len(self.frame)

    @property
    def n_cols(self) -> int:
        return len(self.names)

    def line(self, row: int) -> int:
        """Where data row ``row`` is: its 0-based index (.npy) or its 1-based line in the file."""
        if self.array is not None:
            return int(row)
        if self._lines is None:
            self._lines = np.array([line for _, line in _csv_rows(self.path, self.delimiter, self.encoding)])
            self._lines = self._lines[int(self.has_header) :]
        return int(self._lines[row]) if row < len(self._lines) else row + 1 + int(self.has_header)

    def column(self, spec: str) -> int:
        """Index of a column given by header name or 0-based (negative from the end) index."""
        if self.has_header and spec in self.names:
            if self.names.count(spec) > 1:
                raise CommandError(f"{self.path}: column name {spec!r} appears more than once")
            return self.names.index(spec)
        try:
            i = int(spec)
        except ValueError:
            shown = ", ".join(repr(n) for n in self.names[:20]) + (", ..." if self.n_cols > 20 else "")
            what = f"columns are {shown}" if self.has_header else "the file has no header, give a 0-based index"
            raise CommandError(f"{self.path}: no column named {spec!r} ({what})") from None
        if not -self.n_cols <= i < self.n_cols:
            raise CommandError(f"{self.path}: column index {i} is out of range for {self.n_cols} columns")
        return i % self.n_cols

    def _series(self, c: int):
        return self.frame.iloc[:, c]

    def is_numeric(self, c: int) -> bool:
        if self.array is not None:
            return True
        import pandas as pd

        s = self._series(c)
        return bool(pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s))

    def numeric(self, cols, allow_missing: bool = False) -> np.ndarray:
        """float64 array (n_rows, len(cols)); a CommandError names the first bad cell otherwise.

        ``allow_missing``: missing cells become NaN (for an imputer) instead of an error; infinite
        values are refused either way.
        """
        cols = list(cols)
        if self.array is not None:
            out = np.asarray(self.array[:, cols], dtype=np.float64)
        else:
            out = np.empty((self.n_rows, len(cols)))
            for k, c in enumerate(cols):
                out[:, k] = self._numeric_column(c)
        bad = np.isinf(out) if allow_missing else ~np.isfinite(out)
        if bad.any():
            row, k = np.argwhere(bad)[0]
            what = "an infinite value" if allow_missing else "a missing, NaN or infinite value"
            raise CommandError(
                f"{self.path}: column {self.names[cols[k]]!r} has {what} on {self.unit} {self.line(row)}"
            )
        return out

    def _numeric_column(self, c: int) -> np.ndarray:
        import pandas as pd

        s = self._series(c)
        if self.is_numeric(c):
            return s.to_numpy(dtype=np.float64, na_value=np.nan)
        values = pd.to_numeric(s, errors="coerce")
        bad = values.isna() & s.notna()
        row = int(np.flatnonzero(bad.to_numpy())[0])
        value = str(s.iloc[row])
        raise CommandError(
            f"{self.path}: column {self.names[c]!r} has {value!r}, not a number on {self.unit} {self.line(row)}"
            + decimal_comma_hint(value)
        )

    def text_share(self, c: int) -> tuple[float, int | None]:
        """For a text column: the share of its non-missing cells that are numbers, and the first
        row holding text (to name a typo in a column of numbers)."""
        s = self._series(c)
        present = s.dropna()
        numbers = np.array([is_number(v) for v in present], dtype=bool)
        first_text = int(np.flatnonzero(~numbers)[0]) if (~numbers).any() else None
        row = None if first_text is None else int(self.frame.index.get_loc(present.index[first_text]))
        return (float(numbers.mean()) if len(numbers) else 0.0), row

    def text(self, c: int) -> np.ndarray:
        """Column ``c`` as the text in the file (object array; missing cells are NaN).

        A column pandas read as numbers is read again as text, so that a category ``10`` stays
        ``'10'`` (not ``'10.0'``) whatever the other rows hold."""
        if self.array is not None:
            return np.array([str(v) for v in self.array[:, c]], dtype=object)
        s = self._series(c)
        if self.is_numeric(c):
            import pandas as pd

            raw = pd.read_csv(
                self.path, sep=self.delimiter, header=0 if self.has_header else None, usecols=[c], dtype=str,
                skiprows=self._skip, encoding=self.encoding, skipinitialspace=True, skip_blank_lines=True,
                na_values=list(self.na_values), low_memory=False,
            ).iloc[:, 0]  # fmt: skip
            s = raw.str.strip().where(raw.notna(), np.nan)
        out = np.array(s.astype(object).to_numpy(dtype=object), dtype=object, copy=True)
        out[s.isna().to_numpy()] = np.nan
        return out

    def missing(self, c: int) -> np.ndarray:
        if self.array is not None:
            return np.isnan(np.asarray(self.array[:, c], dtype=np.float64))
        return self._series(c).isna().to_numpy()

    def labels(self, col: int) -> np.ndarray:
        """A target column: int or float when every cell is a number, else the text; no missing cells."""
        miss = self.missing(col)
        if miss.any():
            row = int(np.flatnonzero(miss)[0])
            raise CommandError(
                f"{self.path}: target column {self.names[col]!r} has a missing value on {self.unit} {self.line(row)}"
            )
        if self.array is not None or self.is_numeric(col):
            values = self.numeric([col])[:, 0]
        else:
            s = self._series(col)
            if not all(is_number(v) for v in s):
                return s.astype(str).to_numpy(dtype=object).astype(str)
            values = s.astype(np.float64).to_numpy()
        if np.isfinite(values).all() and np.all(values == np.round(values)):
            return values.astype(np.int64)  # 0/1 class labels print as 0 and 1, not 0.0
        return values


def read_matrix(path: str, args) -> np.ndarray:
    """A numeric data file as a 2-D float array (float32 .npy kept as float32)."""
    table = read_table(path, args)
    if table.array is not None and table.array.dtype == np.float32:
        if not np.isfinite(table.array).all():
            table.numeric(range(table.n_cols))  # raises with the position
        return np.asarray(table.array)
    return table.numeric(range(table.n_cols))


def read_table(path: str, args=None) -> Table:
    """Read a .npy array (1-D: one column) or a CSV/TSV file with the table options of ``args``
    (``header``, ``delimiter``, ``encoding``, ``na_values``; any may be missing)."""
    header = getattr(args, "header", None)
    delimiter = getattr(args, "delimiter", None)
    encoding = getattr(args, "encoding", None) or "utf-8-sig"
    na_values = getattr(args, "na_values", None) or []
    decimal = getattr(args, "decimal", None) or "."
    p = input_file(path)
    if p.suffix.lower() == ".npy":
        return _read_npy(p)
    sample = _sample(p, encoding)
    if not sample.strip():
        raise CommandError(f"{p}: the file is empty")
    if delimiter is None:
        delimiter = "\t" if p.suffix.lower() == ".tsv" else _sniff(sample, SNIFF_DELIMITERS.replace(decimal, ""))
    elif len(delimiter) != 1:
        raise CommandError(f"--delimiter: expected one character, got {delimiter!r}")
    first = next(_csv_rows(p, delimiter, encoding), None)
    if first is None:
        raise CommandError(f"{p}: the file is empty")
    row, line = first
    na = set(na_values) | _DEFAULT_NA
    kinds = ["number" if is_number(c, decimal) else "missing" if c in na else "text" for c in row]
    frame = None
    if header is None:
        if "text" not in kinds:
            header = False
        elif all(k == "text" for k in kinds) and len(set(row)) == len(row):
            header = True
        else:
            frame = _read_csv(p, delimiter, encoding, na_values, header=False, first_line=line, decimal=decimal)
            header = _mixed_first_line(p, frame, row, kinds, line)
    if frame is None or header:
        frame = _read_csv(p, delimiter, encoding, na_values, header=header, first_line=line, decimal=decimal)
    if header:
        names = [str(c).strip() for c in frame.columns]  # pandas renames repeats: 'a', 'a.1'
    else:
        names = [str(i) for i in range(frame.shape[1])]
    frame.columns = names
    if len(frame) == 0:
        raise CommandError(f"{p}: no data rows")
    table = Table(p, names, bool(header), frame=frame, encoding=encoding, delimiter=delimiter,
                  na_values=tuple(na_values), _skip=line - 1)  # fmt: skip
    if frame.isna().to_numpy().any():  # pandas pads short lines with NaN: find them
        _check_ragged(p, delimiter, encoding, len(names), first)
    return table


_DEFAULT_NA = {
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
    "NULL", "NaN", "None", "n/a", "nan", "null",
}  # fmt: skip  (pandas' default NA markers)


def _mixed_first_line(p: Path, frame, row, kinds, line) -> bool:
    """A first line mixing numbers and text: a header or data?  Refuse when it cannot be told."""
    import pandas as pd

    body = frame.iloc[1:]
    for c, kind in enumerate(kinds):
        if kind != "text" or c >= body.shape[1]:
            continue
        values = pd.to_numeric(body.iloc[:, c], errors="coerce")
        if len(body) and values.notna().sum() == body.iloc[:, c].notna().sum() and values.notna().any():
            raise CommandError(
                f"{p}: cannot tell whether line {line} is a header or data: its cell {row[c]!r} is text in a "
                f"column of numbers, while {sum(k == 'number' for k in kinds)} other cell(s) are numbers; "
                "pass --header or --no-header"
            )
    if all(k != "number" for k in kinds):
        raise CommandError(
            f"{p}: cannot tell whether line {line} is a header: it repeats a name; pass --header (and make the "
            "names unique) or --no-header"
        )
    return False


def _sample(p: Path, encoding: str) -> str:
    with open(p, "rb") as f:
        raw = f.read(_SAMPLE_BYTES)
    if b"\x00" in raw:
        raise CommandError(f"{p}: not a text file (a binary file? .npy files need the .npy suffix)")
    if len(raw) == _SAMPLE_BYTES and b"\n" in raw:
        raw = raw[: raw.rindex(b"\n") + 1]  # no character cut in half at the end
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        raise CommandError(
            f"{p}: not {encoding.replace('-sig', '').upper()} text; pass its encoding with --encoding "
            "(e.g. latin-1, cp1252)"
        ) from None
    except LookupError:
        raise CommandError(f"--encoding: unknown encoding {encoding!r}") from None


def _sniff(sample: str, delimiters: str = SNIFF_DELIMITERS) -> str:
    lines = [ln for ln in sample.splitlines() if ln.strip()][:50]
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=delimiters).delimiter
    except csv.Error:
        return ","  # one column, or nothing to tell: the CSV default


def _read_csv(p: Path, delimiter: str, encoding: str, na_values, header: bool, first_line: int, decimal: str = "."):
    import pandas as pd

    try:
        frame = pd.read_csv(
            p,
            sep=delimiter,
            header=0 if header else None,
            skiprows=first_line - 1,
            encoding=encoding,
            na_values=list(na_values),
            skipinitialspace=True,
            skip_blank_lines=True,
            decimal=decimal,
            comment=None,
            low_memory=False,
        )
    except pd.errors.EmptyDataError:
        raise CommandError(f"{p}: the file is empty") from None
    except pd.errors.ParserError as exc:
        _check_ragged(p, delimiter, encoding, None, None)
        raise CommandError(f"{p}: cannot parse as CSV ({str(exc).strip()})") from None
    except UnicodeDecodeError:
        raise CommandError(f"{p}: not {encoding} text; pass its encoding with --encoding (e.g. latin-1)") from None
    for c in frame.columns:  # text cells: no surrounding blanks; then numbers where every cell is one
        s = frame[c]
        if pd.api.types.is_string_dtype(s) or s.dtype == object:
            s = s.astype(object).where(s.isna(), s.astype(str).str.strip())
            s = s.where(~s.isin(["", *na_values]), np.nan)
            converted = pd.to_numeric(s, errors="coerce")
            frame[c] = converted if converted.notna().sum() == s.notna().sum() and s.notna().any() else s
    return frame


def _check_ragged(p: Path, delimiter: str, encoding: str, n_fields: int | None, first) -> None:
    rows = _csv_rows(p, delimiter, encoding)
    if first is None:
        first = next(rows, None)
        if first is None:
            return
    expected = len(first[0]) if n_fields is None else n_fields
    for row, line in rows:
        if len(row) != expected:
            raise CommandError(
                f"{p}: line {line} has {len(row)} fields, expected {expected} like line {first[1]}"
            )


def _csv_rows(p: Path, delimiter: str, encoding: str = "utf-8-sig"):
    """(stripped fields, 1-based line number) of each non-blank CSV line."""
    try:
        with open(p, newline="", encoding=encoding) as f:
            reader = csv.reader(f, delimiter=delimiter)
            for row in reader:
                row = [c.strip() for c in row]
                if any(row):
                    yield row, reader.line_num
    except UnicodeDecodeError:
        raise CommandError(f"{p}: not {encoding} text; pass its encoding with --encoding (e.g. latin-1)") from None
    except csv.Error as exc:
        raise CommandError(f"{p}: cannot parse as CSV ({exc})") from None


def _read_npy(p: Path) -> Table:
    try:
        a = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CommandError(f"{p}: not a readable .npy array ({exc})") from None
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise CommandError(f"{p}: expected a non-empty 1-D or 2-D array, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise CommandError(f"{p}: expected a real numeric array, got dtype {a.dtype}")
    names = [str(i) for i in range(a.shape[1])]
    return Table(p, names, False, array=a)


def standardize(X: np.ndarray, *others):
    """Columns of X to mean 0, std 1; ``others`` with X's statistics (constant columns stay 0)."""
    mean, std = X.mean(axis=0), X.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return [(A - mean) / std for A in (X, *others)]
