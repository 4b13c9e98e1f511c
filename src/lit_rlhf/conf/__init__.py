"""The shipped Hydra configs (`pkg://lit_rlhf.conf`): train.yaml and its groups. Add your own with
`hydra.searchpath=[file://./my_conf]` (see the README's "Your own experiments")."""
