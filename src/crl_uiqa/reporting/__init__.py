"""What people look at: the offline HTML report (:mod:`.html`), its figures (:mod:`.figures`) and the
report of any scores CSV (:mod:`.scores`)."""
