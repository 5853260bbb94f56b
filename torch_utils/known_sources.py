# SPDX-License-Identifier: Apache-2.0
"""The module sources a snapshot may carry and still load without --trust-pickle.

A persistent network (torch_utils/persistence.py) stores the full source of the module that defines its class,
and loading it executes that source. The restricted loader (torch_utils/safe_unpickle.py) executes a stored
source only when its SHA-256 is listed here or is that of the same module in the current tree. Each entry is a
version of a module that defines persistent classes, as committed to this repository: (SHA-256 of the file's
text, module, the commit that wrote that version). tests/torch_utils/test_persistence.py checks the list
against the git history; when a commit changes one of these modules, add the new version here so that snapshots
made with it keep loading after the next change.

Being listed means "written by this project, safe to execute", not "loads": the versions of commits 1de8446
and 0513a9e import training.volume, which 2d74d01 removed, so their snapshots stop with a one-line error.
"""

KNOWN_SOURCES: tuple[tuple[str, str, str], ...] = (
    ('26477079356e7c80c2831a08a1b1394b92db9d566294ea7df9ffee61c1a57e84', 'training.networks', '3dcdb22'),
    ('2da7954c4da858269d3cef0c8aa76d5d29c5b1e47b959656cfed1e8165274370', 'training.networks', 'edf7a94'),
    ('8ff887af8cb76e81d757c516a28839d9be515a3036f3ccae0b97a3a10c109668', 'training.networks', '8198abd'),
    ('48e05f012329423b5a9239259b19d61a3090e738c6888cf43a7d776605dc8848', 'training.networks', '1de8446'),
    ('5ffd22b1203c5c9088de5e7b6a2cdace848c104f51e06f3f7ed6301c8d46cbc3', 'training.networks', '0513a9e'),
    ('2799e78fcb5500c3cc53c8c9dd95c4a6edd6c3835b1fa3a57c2ee6d0a90ce0a2', 'training.networks', '2d74d01'),
    ('8ed6e821e9dabe8c3d462cc8525e79c97e3ec44f63157b3faa1c3e649ab8c4eb', 'training.networks', '7255cdc'),
    ('b6f46e6d4dc07fb1affa9d8a2189b1da88ac45e684adf5f8e968be4a0b7f3b47', 'training.layers', 'edf7a94'),
    ('f39a809f22113dc57e49ebd0d84cbfd4b132efc718b3a77b07177137e57c68c7', 'training.layers', 'e30200e'),
    ('b60cce4eee6afcfe36508cbbeb52405a1b51a189ae8c5f41cbaba0d9c6b598b1', 'training.layers', '1de8446'),
    ('154bda5b61f1ad1bee1044350769f38b134b8747548d26484769cb125424d219', 'training.layers', '2d74d01'),
    ('98680f5698be6aaf989f6d85ae290e6fa84c2095b4404f8ca3b0fe6cc02549be', 'training.layers', '7255cdc'),
    ('595cc40edf5f6cd7d69ad72f97fe2430472b213f13de28e4dc02ed0d359e0f8f', 'training.augment', 'bda381e'),
    ('05120ba307a4d136dad409f55ff798c1d662f532656397f991b58d0f7538ca9e', 'training.augment', 'c0a9f8a'),
    ('f9f3412c5f88f6f65e91653bd73978a9ce335d552907921438be3e8fb79326c9', 'training.augment', 'd9c2560'),
    ('1560a1b592c3130ece615f34ea3dd7d25ddb94870a6b72bafea5137a553c8e3c', 'training.augment', 'b3a3c86'),
    ('e899a7c116c7e6c11ab8d8e7db87948caf3c0246a429af5be9019c43aa0e2372', 'training.augment', 'e274f64'),
    ('abe06809bebb5401215a3bc93e918582fac4a3124c2affe6b7a0e01fb85861c8', 'training.augment', '0513a9e'),
    ('5d52c23096b49438e3daed4cdaaa358dfe940a22b7143063ce3c7b5ab4f057e9', 'training.augment', '2d74d01'),
    ('d3b80c161fee4cabd611758e08547e0e61a914718dcf870da3aaa05ec90092f0', 'training.augment', '4d76a29'),
    ('fdaac436b4ba30a32e59efaedd1801e7d4350ca39e4db45983cc207d5b2eef22', 'training.augment', 'ce3ccfd'),
    ('ed0ec382ab8f2a34cdd7c9ad2ddb54d2b64072df21febc358bbc6574f8777bc2', 'training.augment', 'cc91a18'),
    ('cdb339fedcf97aea644ddd6ee0fbe2bf0e307019b421736ce4df0e2a16849a0c', 'training.augment', '9e9165d'),
    ('a94e5abf695a3bf3844df5dd0d0cdcc09da20422d956e43fa64b7bcc53306ba7', 'metrics.medicalnet', '13b97eb'),
    ('dfbc015faf66fa00748525dfde7d9a0ece08537877549bc95c893789f7a4adcc', 'metrics.medicalnet', '0f23fb0'),
)
