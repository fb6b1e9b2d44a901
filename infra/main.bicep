// tsarchive: a TimescaleDB archiver on Azure Functions (Flex Consumption), ADLS Gen2 and Service Bus.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names and tags every resource.')
param environmentName string

@minLength(1)
@description('Region for every resource (one that offers Flex Consumption).')
param location string

@description('Object id of the deploying principal, granted read access to the archive for smoke tests. Optional.')
param principalId string = ''

@allowed(['User', 'ServicePrincipal', 'Group'])
@description('What principalId is: azd sets AZURE_PRINCIPAL_TYPE (ServicePrincipal when provisioning from CI or azd pipeline).')
param principalType string = 'User'

@allowed(['servicebus', 'storagequeue'])
@description('Messaging between planner, archiver and dropper.')
param transport string = 'servicebus'

@allowed(['entra', 'keyvault'])
@description('entra: Entra ID token as the database password (no secret). keyvault: a password kept in Key Vault.')
param databaseAuth string = 'entra'

@description('Database URL without a password, e.g. postgresql://id-tsarchive@myserver.postgres.database.azure.com/metrics?sslmode=require.')
param databaseUrl string

@secure()
@description('Only for databaseAuth=keyvault: the full database URL including the password, stored as a Key Vault secret.')
param databasePassword string = ''

@minValue(1)
param retentionDays int = 730

@description('Comma-separated native partitioned tables to archive (opt-in).')
param partitionedTables string = ''

@description('Planner schedule (NCRONTAB, UTC).')
param schedule string = '0 0 2 * * *'

@description('Recovery drill schedule (NCRONTAB, UTC), e.g. 0 0 3 * * 0; empty leaves the drill off.')
param drillSchedule string = ''

@allowed([2048, 4096])
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 20

@description('Archive blobs move to cool after this many days (after the verification window).')
param coolAfterDays int = 30
param coldAfterDays int = 90
@description('Opt-in: days after which data files (never the Delta log or the manifests) move to the offline Archive tier. 0 keeps every blob online. Offline files cannot be queried, drilled or restored until rehydrated (up to 15 hours). Needs offlineTierPrefixes.')
param archiveAfterDays int = 0
@description('With archiveAfterDays: the data-file prefixes `tsarchive lifecycle` prints, comma-separated. Re-run it and re-provision when a table is first archived.')
param offlineTierPrefixes string = ''

@description('Days of time-based retention (WORM) on the vault: a second container of create-only final copies of every archive (ARCHIVER_VAULT_URL). 0: no vault. The live table never gets a WORM policy (docs/deploy.md, Immutable copies).')
@minValue(0)
param immutabilityDays int = 0
@description('Set true after locking the vault policy (az storage container immutability-policy lock): a locked policy accepts only extensions, so the template stops declaring it.')
param immutabilityPolicyLocked bool = false
@description('Days after which vault data files move to the offline Archive tier; 0 keeps them online. The vault manifests stay online.')
@minValue(0)
param vaultArchiveAfterDays int = 0

@minValue(1)
@maxValue(365)
param softDeleteDays int = 30

@description('Subnet for VNet integration of the function app (to reach a private database). Optional.')
param functionsSubnetId string = ''

@description('Subnet for private endpoints of the storage accounts (blob, dfs, queue, table). Optional; empty keeps public endpoints (identity-only access). Needs functionsSubnetId in the same VNet.')
param privateEndpointSubnetId string = ''

@description('Resource group id that already holds the privatelink.* DNS zones (hub-and-spoke). Empty: the zones are created here and linked to the VNet of privateEndpointSubnetId.')
param privateDnsZonesResourceGroupId string = ''

@description('Only for databaseAuth=keyvault: recover the soft-deleted vault of an earlier deployment of this environment (after azd down; its name stays reserved for 90 days).')
param keyVaultRecover bool = false

@description('Email for alerts. Optional.')
param alertEmail string = ''

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var queueNames = ['archive-requests', 'archive-confirmations', 'archive-poison']
var archiveFileSystem = 'archive'
var privateNetwork = !empty(privateEndpointSubnetId)
// Storage behind private endpoints is reachable only from the VNet: without VNet integration the host could not read
// its own storage and would never start. int() of a sentence fails the deployment with that sentence (ARM evaluates
// only the branch taken).
var functionsSubnet = privateNetwork && empty(functionsSubnetId) ? string(int('privateEndpointSubnetId needs functionsSubnetId: with private endpoints the app reaches its storage only through VNet integration')) : functionsSubnetId
var vnetId = privateNetwork ? split(privateEndpointSubnetId, '/subnets/')[0] : ''
var dnsZonesResourceGroupId = empty(privateDnsZonesResourceGroupId) ? rg.id : privateDnsZonesResourceGroupId

resource rg 'Microsoft.Resources/resourceGroups@2022-09-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}tsarchive-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    appInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module privateDns 'modules/private-dns.bicep' = if (privateNetwork && empty(privateDnsZonesResourceGroupId)) {
  name: 'private-dns'
  scope: rg
  params: {
    vnetId: vnetId
    tags: tags
  }
}

module hostStorage 'modules/host-storage.bicep' = {
  name: 'host-storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}func${resourceToken}'
    location: location
    tags: tags
    queueNames: transport == 'storagequeue' ? queueNames : []
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    privateEndpointSubnetId: privateEndpointSubnetId
    privateDnsZonesResourceGroupId: dnsZonesResourceGroupId
  }
  dependsOn: [privateDns]
}

module archiveStorage 'modules/archive-storage.bicep' = {
  name: 'archive-storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}arc${resourceToken}'
    location: location
    tags: tags
    fileSystemName: archiveFileSystem
    coolAfterDays: coolAfterDays
    coldAfterDays: coldAfterDays
    archiveAfterDays: archiveAfterDays
    offlineTierPrefixes: offlineTierPrefixes
    immutabilityDays: immutabilityDays
    immutabilityPolicyLocked: immutabilityPolicyLocked
    vaultArchiveAfterDays: vaultArchiveAfterDays
    softDeleteDays: softDeleteDays
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    privateEndpointSubnetId: privateEndpointSubnetId
    privateDnsZonesResourceGroupId: dnsZonesResourceGroupId
  }
  dependsOn: [privateDns]
}

module serviceBus 'modules/servicebus.bicep' = if (transport == 'servicebus') {
  name: 'servicebus'
  scope: rg
  params: {
    name: '${abbrs.serviceBusNamespaces}${resourceToken}'
    location: location
    tags: tags
    queueNames: queueNames
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

module keyVault 'modules/keyvault.bicep' = if (databaseAuth == 'keyvault') {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    databaseUrlSecret: databasePassword
    recover: keyVaultRecover
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: '${abbrs.webSitesFunctions}tsarchive-${resourceToken}'
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    siteTags: union(tags, { 'azd-service-name': 'archiver' })  // the site alone: azd before 1.23.4 refuses two
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    hostStorageName: hostStorage.outputs.name
    deploymentContainerName: hostStorage.outputs.deploymentContainerName
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    functionsSubnetId: functionsSubnet
    appSettings: {
      ARCHIVER_TRANSPORT: transport
      ARCHIVER_REQUESTS_QUEUE: queueNames[0]
      ARCHIVER_CONFIRMATIONS_QUEUE: queueNames[1]
      ARCHIVER_POISON_QUEUE: queueNames[2]
      ARCHIVER_SCHEDULE: schedule
      ARCHIVER_DRILL_SCHEDULE: drillSchedule
      ARCHIVER_REQUEUE_AFTER_MINUTES: '90'
      ARCHIVER_RETENTION_DAYS: string(retentionDays)
      ARCHIVER_PARTITIONED_TABLES: partitionedTables
      ARCHIVER_LAKE_URL: 'abfss://${archiveFileSystem}@${archiveStorage.outputs.name}.dfs.${environment().suffixes.storage}/timescale'
      ARCHIVER_LAKE_CLIENT_ID: identity.outputs.clientId
      ARCHIVER_VAULT_URL: archiveStorage.outputs.vaultUrl
      ARCHIVER_DATABASE_AUTH: databaseAuth == 'entra' ? 'entra' : 'password'
      ARCHIVER_DATABASE_URL: databaseAuth == 'entra' ? databaseUrl : '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.secretUri})'
      ServiceBusConnection__fullyQualifiedNamespace: transport == 'servicebus' ? serviceBus.outputs.fullyQualifiedNamespace : ''
      ServiceBusConnection__credential: 'managedidentity'
      ServiceBusConnection__clientId: identity.outputs.clientId
      ArchiverQueueStorage__queueServiceUri: hostStorage.outputs.queueEndpoint
      ArchiverQueueStorage__credential: 'managedidentity'
      ArchiverQueueStorage__clientId: identity.outputs.clientId
    }
    keyVaultReferenceIdentityId: identity.outputs.id
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
    archiveStorageName: archiveStorage.outputs.name
    hostStorageName: hostStorage.outputs.name
    serviceBusName: transport == 'servicebus' ? serviceBus.outputs.name : ''
    keyVaultName: databaseAuth == 'keyvault' ? keyVault.outputs.name : ''
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: resourceToken
    location: location
    tags: tags
    alertEmail: alertEmail
    appInsightsId: monitoring.outputs.appInsightsId
    serviceBusId: transport == 'servicebus' ? serviceBus.outputs.id : ''
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    namePrefix: resourceToken
    location: location
    tags: tags
    appInsightsId: monitoring.outputs.appInsightsId
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = functionApp.outputs.url
output AZURE_MANAGED_IDENTITY_NAME string = identity.outputs.name
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output ARCHIVE_STORAGE_ACCOUNT string = archiveStorage.outputs.name
output ARCHIVER_VAULT_URL string = archiveStorage.outputs.vaultUrl
output ARCHIVER_LAKE_URL string = 'abfss://${archiveFileSystem}@${archiveStorage.outputs.name}.dfs.${environment().suffixes.storage}/timescale'
output SERVICEBUS_NAMESPACE string = transport == 'servicebus' ? serviceBus.outputs.fullyQualifiedNamespace : ''
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.appInsightsName
