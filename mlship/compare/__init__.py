"""`mlship compare OLD NEW` (docs/COMPARE.md): two bundles side by side before a promotion."""
