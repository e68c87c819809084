"""Data files, knowing nothing of specs: the search path of data roots, reading jsonl/csv/tsv tables, fetching
pinned files from their origin."""

from moraleval.data.fetch import (FetchError, FetchFile, default_data_root, fetch_files, github_raw_url,
                                  huggingface_url, origin_url)
from moraleval.data.roots import BUILTIN_SAMPLE, DataRoot, locate, search_path, user_data_dir
from moraleval.data.tables import UnsafePath, read_table, resolve_data_path

__all__ = ["BUILTIN_SAMPLE", "DataRoot", "FetchError", "FetchFile", "UnsafePath", "default_data_root", "fetch_files",
           "github_raw_url", "huggingface_url", "locate", "origin_url", "read_table", "resolve_data_path", "search_path", "user_data_dir"]
