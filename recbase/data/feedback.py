"""The pretraining users' feedback as one sparse users x items matrix: what item-to-item collaborative
filtering (``eval.baselines.item_cf``) and the tokenizer's collaborative item factors
(``tokenizer.collaborative``) read. Built from ``Corpus.histories`` only, so no evaluated user's feedback
is in it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recbase import storage
from recbase.data.schema import LIKED, arrow_item_keys, item_keys

# the histories' columns the matrix reads
COLUMNS = ["domains", "item_ids", "feedback"]


class Feedback:
    """The pretraining users' feedback (``Corpus.histories`` rows: domains, item_ids, feedback per user) as a
    sparse users x items matrix: +1 where the user liked the item, -1 where they rated it otherwise."""

    def __init__(self, table: pa.Table) -> None:
        import scipy.sparse as sp

        lengths = pc.list_value_length(table.column("item_ids")).to_numpy(zero_copy_only=False)  # [U]
        flat = pa.table({"domain": pc.list_flatten(table.column("domains")),
                         "item_id": pc.list_flatten(table.column("item_ids"))})
        codes, uniques = pd.factorize(arrow_item_keys(flat).to_numpy(zero_copy_only=False))  # [I], [M]
        liked = pc.list_flatten(table.column("feedback")).to_numpy(zero_copy_only=False) == LIKED  # [I]
        users = np.repeat(np.arange(len(lengths)), lengths)  # [I]
        self.index = pd.Index(uniques)
        self.matrix = sp.csc_matrix((np.where(liked, 1.0, -1.0), (users, codes)), shape=(len(lengths), len(uniques)))

    @classmethod
    def read(cls, histories: str) -> "Feedback":
        """The matrix of a corpus's pretraining histories file (``Corpus.histories``), only the columns it needs."""
        return cls(storage.read_parquet(histories, columns=COLUMNS))

    def rows(self, domains, item_ids) -> np.ndarray:
        return self.index.get_indexer(item_keys(domains, item_ids))
